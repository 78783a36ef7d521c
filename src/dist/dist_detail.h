// Small helpers shared by the dist/ sources (not part of the public API).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace ouroboros::dist_detail {

using Millis = std::chrono::milliseconds;

// Ranks other than 0 wait this long for rank 0 between jobs (it may be evaluating or writing a
// checkpoint); a dead rank 0 is still noticed at once, as it hosts the store.
inline const Millis kBetweenJobs = std::chrono::hours(24);

inline std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

inline std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }
inline std::string string_of(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }


}  // namespace ouroboros::dist_detail
