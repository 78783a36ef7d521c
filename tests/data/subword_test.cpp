// label: unit
// The bpe and unigram tokenizers (sentencepiece): exact round trips on any text, reproducible
// training, the requested vocabulary size, restoring from the saved model, and one-line errors
// for sizes the text cannot give. Skipped in a build without sentencepiece.
#include "ouroboros/data/dataset.h"

#include <gtest/gtest.h>

#include "data_util.h"
#include "test_util.h"

#include <map>
#include <random>
#include <string>
#include <vector>

#include "ouroboros/core/errors.h"

namespace ouroboros {
namespace {

using ouroboros_test::TempDir;

// Sentences from a small vocabulary with a few non-ASCII words, `bytes` long, lines of 4 to 11
// words, some separated by two spaces: enough repeated substrings for a few hundred pieces.
std::string corpus(size_t bytes, uint32_t seed = 7) {
  const std::vector<std::string> words = {"the",
                                          "a",
                                          "cat",
                                          "dog",
                                          "sat",
                                          "on",
                                          "mat",
                                          "ran",
                                          "to",
                                          "park",
                                          "bird",
                                          "looked",
                                          "at",
                                          "tree",
                                          "and",
                                          "then",
                                          "went",
                                          "home",
                                          "over",
                                          "under",
                                          "quickly",
                                          "slowly",
                                          "green",
                                          "house",
                                          "river",
                                          "stone",
                                          "caf\xC3\xA9",
                                          "na\xC3\xAFve",
                                          "\xE4\xB8\xAD\xE6\x96\x87",
                                          "stra\xC3\x9F"
                                          "e",
                                          "walked",
                                          "jumped",
                                          "little",
                                          "big",
                                          "old",
                                          "new",
                                          "morning",
                                          "night"};
  std::mt19937 rng(seed);
  std::string text;
  while (text.size() < bytes) {
    const int n = 4 + static_cast<int>(rng() % 8);
    for (int i = 0; i < n; ++i) {
      if (i > 0) text += rng() % 10 == 0 ? "  " : " ";
      text += words[rng() % words.size()];
    }
    text += rng() % 3 == 0 ? ".\n" : "\n";
  }
  return text;
}

using ouroboros_test::data_error_message;

// Each test runs for bpe and for unigram.
class Subword : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string why;
    if (!Tokenizer::subword_available(&why)) GTEST_SKIP() << why;
  }
  const std::string& kind() const { return GetParam(); }
  // One tokenizer of 350 pieces per kind, trained once for the whole suite.
  const Tokenizer& trained() {
    static std::map<std::string, Tokenizer> cache;
    auto it = cache.find(kind());
    if (it == cache.end()) it = cache.emplace(kind(), Tokenizer::build(kind(), text(), 350)).first;
    return it->second;
  }
  static const std::string& text() {
    static const std::string t = corpus(40000);
    return t;
  }
};

INSTANTIATE_TEST_SUITE_P(Kinds, Subword, ::testing::Values("bpe", "unigram"),
                         [](const auto& info) { return info.param; });

TEST_P(Subword, HasTheRequestedSizeAndTheFixedPieces) {
  const Tokenizer& tok = trained();
  EXPECT_EQ(tok.kind(), kind());
  EXPECT_EQ(tok.vocab_size(), 350);
  EXPECT_FALSE(tok.is_character_level());
  EXPECT_EQ(tok.vocab()[0], "<unk>");
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.vocab()[1], "\n");
  EXPECT_EQ(tok.vocab()[2], "<0x00>");
  EXPECT_EQ(tok.vocab()[257], "<0xFF>");
  EXPECT_FALSE(tok.model_proto().empty());
  // Learned pieces: fewer tokens than characters, and no <unk> thanks to the byte pieces.
  const std::vector<int32_t> ids = tok.encode(text());
  EXPECT_LT(ids.size(), text().size() * 3 / 5) << kind();
  EXPECT_EQ(tok.count_unknown(ids), 0);
  EXPECT_EQ(tok.encode("\n"), (std::vector<int32_t>{1}));
}

TEST_P(Subword, DecodeGivesBackAnyTextExactly) {
  const Tokenizer& tok = trained();
  std::string long_words, long_solid;
  while (long_words.size() < 10000) long_words += "quickly  over the stone ";
  while (long_solid.size() < 10000) long_solid += "xyz\xC3\xA9";
  const std::vector<std::string> texts = {
      "", text(),
      "the cat sat\n\n\nthen  went   home \n",  // empty lines, runs of spaces
      "  leading and trailing  ", "tabs\tand\r\nwindows lines\r\n",
      // seen non-ASCII, then some not in training
      "caf\xC3\xA9 na\xC3\xAFve \xE4\xB8\xAD\xE6\x96\x87 stra\xC3\x9F"
      "e",
      "unseen: \xCE\xB1\xCE\xB2\xCE\xB3 \xE2\x9C\x93 \xF0\x9F\x98\x80 Zebra QQQ",
      "\xE2\x96\x81 is sentencepiece's own space symbol", std::string("nul \0 byte", 10),
      "stray \xFF\xFE bytes, a cut \xC3 sequence, an overlong \xC0\xAF and a surrogate "
      "\xED\xA0\x80",
      "<unk> <0x41> <s> </s> \xE2\x96\x85",  // text that looks like special pieces
      long_words,                            // one line past sentencepiece's limit
      long_solid,                            // the same without a space to cut at
  };
  for (const std::string& t : texts) {
    EXPECT_EQ(tok.decode(tok.encode(t)), t) << kind() << ": " << t.substr(0, 80);
  }
  std::mt19937 rng(11);
  for (int round = 0; round < 200; ++round) {
    std::string bytes(rng() % 64, '\0');
    for (char& c : bytes) c = static_cast<char>(rng() % 4 == 0 ? rng() % 256 : 'a' + rng() % 4);
    EXPECT_EQ(tok.decode(tok.encode(bytes)), bytes) << kind() << " round " << round;
  }
}

TEST_P(Subword, LinesEncodeOnTheirOwn) {
  // A line end is a piece of its own, so a text's ids are its lines' ids around it: a corpus may
  // be encoded piecewise, and cutting a long line before a space changes nothing.
  const Tokenizer& tok = trained();
  std::string line;
  while (line.size() < 9000) line += " the little bird looked at the green tree";
  std::vector<int32_t> expected = tok.encode("caf\xC3\xA9 at night");
  expected.push_back(1);
  const std::vector<int32_t> rest = tok.encode(line);
  expected.insert(expected.end(), rest.begin(), rest.end());
  EXPECT_EQ(tok.encode("caf\xC3\xA9 at night\n" + line), expected);
  std::vector<int32_t> twice = tok.encode(" the little bird looked at the green tree");
  EXPECT_EQ(std::vector<int32_t>(rest.begin(), rest.begin() + static_cast<long>(twice.size())),
            twice);
}

TEST_P(Subword, LargeTextsEncodeInPartsAsAWhole) {
  // 800 kB is encoded in parts on several threads; the ids are those of its lines in order.
  const Tokenizer& tok = trained();
  const std::vector<int32_t> once = tok.encode(text());
  std::string big;
  std::vector<int32_t> expected;
  for (int copy = 0; copy < 20; ++copy) {
    big += text();
    expected.insert(expected.end(), once.begin(), once.end());
  }
  EXPECT_EQ(tok.encode(big), expected);
}

TEST_P(Subword, TrainingIsReproducible) {
  const Tokenizer again = Tokenizer::build(kind(), text(), 350);
  EXPECT_EQ(again.vocab(), trained().vocab());
  EXPECT_EQ(again.model_proto(), trained().model_proto());
  EXPECT_EQ(again.encode(text()), trained().encode(text()));
}

TEST_P(Subword, FromModelRestoresTheSameTokenizer) {
  const Tokenizer& tok = trained();
  const Tokenizer back = Tokenizer::from_model(kind(), tok.model_proto());
  EXPECT_EQ(back.kind(), kind());
  EXPECT_EQ(back.vocab(), tok.vocab());
  EXPECT_EQ(back.model_proto(), tok.model_proto());
  EXPECT_EQ(back.unk_id(), tok.unk_id());
  const std::string probe = text().substr(0, 3000) + "unseen \xE2\x9C\x93\xFF";
  EXPECT_EQ(back.encode(probe), tok.encode(probe));
  EXPECT_EQ(back.decode(tok.encode(probe)), probe);
  // A copy shares the model and outlives the original.
  Tokenizer copy = Tokenizer::from_model(kind(), tok.model_proto());
  {
    Tokenizer moved = copy;
    copy = Tokenizer::byte_level();
    copy = moved;
  }
  EXPECT_EQ(copy.decode(copy.encode(probe)), probe);
}

TEST_P(Subword, BadModelsAreRefused) {
  EXPECT_THROW(Tokenizer::from_model(kind(), ""), DataError);
  EXPECT_THROW(Tokenizer::from_model(kind(), "not a sentencepiece model"), DataError);
  EXPECT_THROW(Tokenizer::from_model("char", trained().model_proto()), DataError);
  EXPECT_THROW(Tokenizer::from_vocab(kind(), trained().vocab()), DataError);
}

TEST_P(Subword, VocabularySizeZeroIsRefusedWithTheFlag) {
  const std::string msg = data_error_message([&] { Tokenizer::build(kind(), text()); });
  EXPECT_NE(msg.find("tokenizer " + kind() + " needs a vocabulary size"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--vocab-size N"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_THROW(Tokenizer::build(kind(), text(), -5), DataError);
  TempDir dir;
  const std::string file = dir.write("c.txt", text()).string();
  EXPECT_NE(data_error_message([&] { load_dataset(file, "text", kind()); }).find("--vocab-size"),
            std::string::npos);
}

TEST_P(Subword, TooLargeVocabularyNamesTheLargestThatWorks) {
  const std::string small = corpus(3000, 3);
  const std::string msg = data_error_message([&] { Tokenizer::build(kind(), small, 100000); });
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_NE(msg.find(kind() + " vocabulary of 100000 pieces is more than the training text "
                              "supports (at most "),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("lower --vocab-size to "), std::string::npos) << msg;
  const size_t at = msg.find("at most ") + 8;
  const int64_t most = std::stoll(msg.substr(at));
  EXPECT_GT(most, 258);
  EXPECT_LT(most, 100000);
  if (kind() == "bpe") {  // the named size is what the trainer found; bpe reaches it exactly
    EXPECT_EQ(Tokenizer::build(kind(), small, most).vocab_size(), most);
  }
}

TEST_P(Subword, TooSmallVocabularyNamesTheSmallestThatWorks) {
  const std::string msg = data_error_message([&] { Tokenizer::build(kind(), text(), 100); });
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_NE(msg.find("vocabulary of 100 pieces is too small"), std::string::npos) << msg;
  EXPECT_NE(msg.find("raise --vocab-size to at least "), std::string::npos) << msg;
  for (int64_t tiny : {1, 258}) EXPECT_THROW(Tokenizer::build(kind(), text(), tiny), DataError);
}

TEST_P(Subword, TextWithoutSentencesIsRefused) {
  // Only line ends and bytes sentencepiece cannot learn from.
  const std::string msg =
      data_error_message([&] { Tokenizer::build(kind(), "\n\n\xFF\xFE\n\xE2\x96\x81\n", 300); });
  EXPECT_NE(msg.find("no text to learn " + kind() + " pieces from"), std::string::npos) << msg;
}

TEST_P(Subword, DatasetsTrainOnTheTrainingSplit) {
  TempDir dir;
  const std::string text = corpus(20000);
  const std::string file = dir.write("c.txt", text).string();
  Dataset d = load_dataset(file, "text", kind(), 320);
  EXPECT_EQ(d.tokenizer.kind(), kind());
  EXPECT_EQ(d.tokenizer.vocab_size(), 320);
  const TextSplits splits = split_90_5_5(text);
  EXPECT_EQ(d.tokenizer.model_proto(), Tokenizer::build(kind(), splits.train, 320).model_proto());
  EXPECT_EQ(d.tokenizer.decode(d.train), splits.train);
  EXPECT_EQ(d.tokenizer.decode(d.valid), splits.valid);
  EXPECT_EQ(d.tokenizer.decode(d.test), splits.test);
  EXPECT_NE(d.description.find(kind() + " tokenizer, vocab 320"), std::string::npos)
      << d.description;
  // With an existing tokenizer (a checkpoint's), the same ids.
  EXPECT_EQ(load_dataset(file, "text", d.tokenizer).test, d.test);
}

}  // namespace
}  // namespace ouroboros
