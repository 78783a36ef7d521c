// Helpers shared by data.cpp and tokenizer.cpp (not part of the public API).
#pragma once

#include <string>

namespace ouroboros::detail {

// True for the bytes 10xxxxxx that continue a UTF-8 character.
inline bool is_continuation_byte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// Throws DataError unless kind is byte, char or word.
void check_tokenizer_kind(const std::string& kind);

}  // namespace ouroboros::detail
