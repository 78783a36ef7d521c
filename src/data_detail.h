// Helpers shared by data.cpp and tokenizer.cpp (not part of the public API).
#pragma once

#include <string>

namespace ouroboros::detail {

// Throws DataError unless kind is byte, char or word.
void check_tokenizer_kind(const std::string& kind);

}  // namespace ouroboros::detail
