// Tokenizers: byte, char and word vocabularies, text to token ids and back.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace ouroboros {

// Maps text to token ids and back. Kinds: "byte" (256 symbols), "char" (Unicode code points seen
// in the training split, plus <unk>), "word" (whitespace tokens plus <eos> per line, WikiText style,
// vocabulary from the training split, unknown words -> <unk>).
class Tokenizer {
 public:
  static Tokenizer byte_level();
  // Builds a char or word vocabulary from the training text.
  static Tokenizer build(const std::string& kind, const std::string& train_text);
  // Rebuilds from a saved kind and vocabulary (checkpoints).
  static Tokenizer from_vocab(const std::string& kind, const std::vector<std::string>& vocab);

  const std::string& kind() const { return kind_; }
  int64_t vocab_size() const;
  // The symbols, index = token id. For "byte" this is the 256 one-byte strings.
  const std::vector<std::string>& vocab() const { return vocab_; }
  // True for byte/char vocabularies, whose loss is reported in bits per character.
  bool is_character_level() const { return kind_ != "word"; }

  std::vector<int32_t> encode(const std::string& text) const;
  // The id of <unk> (-1 for byte, which knows every byte), and how many ids of a sequence are it.
  int32_t unk_id() const { return unk_; }
  int64_t count_unknown(const std::vector<int32_t>& ids) const;
  // char decodes <unk> as U+FFFD; word decodes it as the literal "<unk>" (WikiText's own token).
  std::string decode(const std::vector<int32_t>& ids) const;

 private:
  // Fills index_, unk_, eos_ and ascii_ids_ from kind_ and vocab_.
  void index_vocab();

  std::string kind_;
  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int32_t> index_;
  std::vector<int32_t> ascii_ids_;  // char: id of each ASCII byte (unk_ if unseen), skips the map
  int32_t unk_ = -1;
  int32_t eos_ = -1;
};

}  // namespace ouroboros
