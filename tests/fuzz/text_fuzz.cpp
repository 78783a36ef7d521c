// libFuzzer target: arbitrary bytes as a corpus: the 90/5/5 split, the byte, char and word
// tokenizers built on it (encode/decode round trips where they must), and a vocabulary rebuilt
// from the checkpoint form. Anything but ouroboros::Error is a finding.
#include <cstdint>
#include <string>
#include <vector>

#include "ouroboros/core/errors.h"
#include "ouroboros/data/dataset.h"
#include "ouroboros/data/tokenizer.h"

using ouroboros::Tokenizer;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const ouroboros::TextSplits s = ouroboros::split_90_5_5(text);
    if (s.train + s.valid + s.test != text) __builtin_trap();  // the split loses nothing
    const Tokenizer byte = Tokenizer::byte_level();
    if (byte.decode(byte.encode(text)) != text) __builtin_trap();
    for (const char* kind : {"char", "word"}) {
      const Tokenizer tok = Tokenizer::build(kind, s.train);
      const std::vector<int32_t> ids = tok.encode(text);
      const std::string back = tok.decode(ids);
      if (std::string(kind) == "char" && tok.count_unknown(tok.encode(s.train)) == 0 &&
          tok.decode(tok.encode(s.train)) != s.train) {
        __builtin_trap();  // every symbol of the training text is known and round-trips
      }
      const Tokenizer again = Tokenizer::from_vocab(tok.kind(), tok.vocab());
      if (again.encode(text) != ids) __builtin_trap();
      (void)back;
    }
  } catch (const ouroboros::Error&) {
  }
  return 0;
}
