// Tokenizers: byte, char, word, subword (bpe, unigram) and GPT-2's byte-level BPE (gpt2)
// vocabularies, text to token ids and back.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace ouroboros {

namespace detail {
class SubwordModel;
class Gpt2Bpe;
}  // namespace detail

// Maps text to token ids and back. Kinds: "byte" (256 symbols), "char" (Unicode code points seen
// in the training split, plus <unk>), "word" (whitespace tokens plus <eos> per line, WikiText
// style, vocabulary from the training split, unknown words -> <unk>), "bpe" and "unigram"
// (sentencepiece subwords learned from the training split: <unk>, the line end, the 256 byte pieces
// that spell whatever the other pieces do not, then the learned pieces; needs a build with
// sentencepiece), and "gpt2" (GPT-2's byte-level BPE loaded from a Hugging Face tokenizer file,
// gpt2.cpp).
class Tokenizer {
 public:
  static Tokenizer byte_level();
  // Builds a char or word vocabulary from the training text, or trains a bpe or unigram model of
  // exactly vocab_size pieces on it (vocab_size > 0 required there; the other kinds ignore it).
  // Throws DataError for a size the text cannot give, naming the largest that works.
  static Tokenizer build(const std::string& kind, const std::string& train_text,
                         int64_t vocab_size = 0);
  // Rebuilds from a saved kind and vocabulary (checkpoints); not for bpe/unigram/gpt2
  // (from_model).
  static Tokenizer from_vocab(const std::string& kind, const std::vector<std::string>& vocab);
  // Rebuilds a bpe, unigram or gpt2 tokenizer from its serialized model (model_proto()).
  static Tokenizer from_model(const std::string& kind, const std::string& model_proto);
  // A gpt2 tokenizer from a Hugging Face tokenizer.json (a BPE model with the ByteLevel
  // pre-tokenizer and decoder), or a directory holding it or vocab.json + merges.txt. Throws
  // DataError, naming the file, for a missing or damaged file or a tokenizer of another kind.
  static Tokenizer from_file(const std::string& path);
  // Whether bpe and unigram work in this build; if not, *why says why and how to fix it.
  static bool subword_available(std::string* why = nullptr);

  const std::string& kind() const { return kind_; }
  int64_t vocab_size() const;
  // The symbols, index = token id. For "byte" this is the 256 one-byte strings; for bpe and
  // unigram the sentencepiece pieces, which write a space as U+2581 and a byte as "<0x41>"; for
  // gpt2 the tokens of vocab.json, bytes written through GPT-2's byte-to-character map ("Ġthe").
  const std::vector<std::string>& vocab() const { return vocab_; }
  // The serialized model: sentencepiece's ModelProto for bpe and unigram, a tokenizer.json
  // (vocabulary, merges, added tokens) for gpt2; empty for the other kinds.
  const std::string& model_proto() const;
  // True for byte/char vocabularies, whose loss is reported in bits per character.
  bool is_character_level() const { return kind_ == "byte" || kind_ == "char"; }

  std::vector<int32_t> encode(const std::string& text) const;
  // The id of <unk> (-1 for byte, which knows every byte), and how many ids of a sequence are it.
  int32_t unk_id() const { return unk_; }
  int64_t count_unknown(const std::vector<int32_t>& ids) const;
  // char decodes <unk> as U+FFFD; word decodes it as the literal "<unk>" (WikiText's own token).
  // bpe, unigram and gpt2 give back any encoded byte string exactly.
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
  std::shared_ptr<const detail::SubwordModel> subword_;  // bpe, unigram
  std::shared_ptr<const detail::Gpt2Bpe> gpt2_;          // gpt2
};

}  // namespace ouroboros
