// label: unit
// Tokenizers, corpus formats, 90/5/5 splits, batch sampling and evaluation windows, on tiny corpora
// written to a temporary directory.
#include "ouroboros/data/dataset.h"

#include <gtest/gtest.h>

#include "data_util.h"
#include "test_util.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "ouroboros/core/errors.h"

namespace ouroboros {
namespace {
namespace fs = std::filesystem;

using ouroboros_test::TempDir;

// Sets an environment variable for one scope and restores the previous value.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_.empty())
      unsetenv(name_);
    else
      setenv(name_, old_.c_str(), 1);
  }

 private:
  const char* name_;
  std::string old_;
};

using ouroboros_test::data_error_message;

std::vector<int64_t> row(const torch::Tensor& t, int64_t r) {
  torch::Tensor c = t[r].contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// ---- Tokenizers ---------------------------------------------------------------------------

TEST(Tokenizer, ByteIdsAreByteValuesAndRoundTrip) {
  Tokenizer tok = Tokenizer::byte_level();
  EXPECT_EQ(tok.vocab_size(), 256);
  EXPECT_EQ(tok.vocab()[65], "A");
  EXPECT_TRUE(tok.is_character_level());
  std::string text = "h\xC3\xA9!";  // "hé!" in UTF-8: 4 bytes
  EXPECT_EQ(tok.encode(text), (std::vector<int32_t>{104, 0xC3, 0xA9, 33}));
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes += static_cast<char>(b);
  EXPECT_EQ(tok.decode(tok.encode(all_bytes)), all_bytes);
}

TEST(Tokenizer, CharVocabIsSortedCodePointsThenUnk) {
  std::string text = "h\xC3\xA9llo w\xC3\xB6rld \xE2\x9C\x93";  // "héllo wörld ✓"
  Tokenizer tok = Tokenizer::build("char", text);
  EXPECT_EQ(tok.vocab(), (std::vector<std::string>{" ", "d", "h", "l", "o", "r", "w", "\xC3\xA9",
                                                   "\xC3\xB6", "\xE2\x9C\x93", "<unk>"}));
  std::vector<int32_t> ids = tok.encode(text);
  EXPECT_EQ(ids.size(), 13u);  // 13 code points
  EXPECT_EQ(ids[1], 7);        // é
  EXPECT_EQ(ids[12], 9);       // ✓
  EXPECT_EQ(tok.decode(ids), text);
}

TEST(Tokenizer, CharUnseenMapsToUnkAndDecodesAsReplacementChar) {
  Tokenizer tok = Tokenizer::build("char", "ab");
  EXPECT_EQ(tok.encode("axb\xC3\xA9"), (std::vector<int32_t>{0, 2, 1, 2}));
  EXPECT_EQ(tok.decode({0, 2}), "a\xEF\xBF\xBD");
}

TEST(Tokenizer, CharInvalidUtf8BytesAreSymbolsOfTheirOwn) {
  std::string text =
      "a\xFF"
      "b\xC3";  // a stray byte and a truncated sequence
  Tokenizer tok = Tokenizer::build("char", text);
  EXPECT_EQ(tok.vocab_size(), 5);
  EXPECT_EQ(tok.decode(tok.encode(text)), text);
}

TEST(Tokenizer, WordVocabByCountThenAlphabetical) {
  Tokenizer tok = Tokenizer::build("word", "the cat\nthe dog\tsat\n");
  // the:2, <eos>:2, then count 1 alphabetically, then <unk> (count 0).
  EXPECT_EQ(tok.vocab(), (std::vector<std::string>{"<eos>", "the", "cat", "dog", "sat", "<unk>"}));
  EXPECT_FALSE(tok.is_character_level());
  EXPECT_EQ(tok.encode("the cat\n"), (std::vector<int32_t>{1, 2, 0}));
  EXPECT_EQ(tok.encode("the  bird"), (std::vector<int32_t>{1, 5, 0}));  // last line gets <eos>
  EXPECT_TRUE(tok.encode("").empty());
  EXPECT_EQ(tok.encode("\n\n"), (std::vector<int32_t>{0, 0}));  // empty lines still end
  EXPECT_EQ(tok.decode({1, 2, 0, 3, 4, 0}), "the cat\ndog sat\n");
  EXPECT_EQ(tok.decode({1, 5}), "the <unk>");
}

TEST(Tokenizer, WordVocabCountsUnkFromText) {
  Tokenizer tok = Tokenizer::build("word", "a <unk> <unk>\n");
  EXPECT_EQ(tok.vocab(), (std::vector<std::string>{"<unk>", "<eos>", "a"}));
  EXPECT_EQ(tok.encode("zzz"), (std::vector<int32_t>{0, 1}));
}

TEST(Tokenizer, WordRoundTripsUtf8) {
  std::string text = "h\xC3\xA9llo w\xC3\xB6rld \xE2\x9C\x93\nsecond line\n";
  Tokenizer tok = Tokenizer::build("word", text);
  EXPECT_EQ(tok.decode(tok.encode(text)), text);
}

TEST(Tokenizer, FromVocabRebuildsIdenticalTokenizers) {
  std::string text = "h\xC3\xA9llo w\xC3\xB6rld\nand more words here\n";
  for (const char* kind : {"byte", "char", "word"}) {
    Tokenizer built = Tokenizer::build(kind, text);
    Tokenizer rebuilt = Tokenizer::from_vocab(kind, built.vocab());
    EXPECT_EQ(rebuilt.kind(), kind);
    EXPECT_EQ(rebuilt.vocab(), built.vocab()) << kind;
    EXPECT_EQ(rebuilt.encode(text + "unseen \xE2\x9C\x93"),
              built.encode(text + "unseen \xE2\x9C\x93"))
        << kind;
  }
}

TEST(Tokenizer, FromVocabRejectsBadVocabularies) {
  std::vector<std::string> short_bytes(255, "x");
  EXPECT_NE(data_error_message([&] { Tokenizer::from_vocab("byte", short_bytes); }).find("255"),
            std::string::npos);
  EXPECT_THROW(Tokenizer::from_vocab("char", {"a", "b"}), DataError);  // no trailing <unk>
  EXPECT_THROW(Tokenizer::from_vocab("char", {"a", "a", "<unk>"}), DataError);
  EXPECT_THROW(Tokenizer::from_vocab("word", {"a", "<unk>"}), DataError);  // no <eos>
  EXPECT_THROW(Tokenizer::from_vocab("bpe", {"a"}), DataError);
  EXPECT_THROW(Tokenizer::build("bpe", "a"), DataError);
}

TEST(Tokenizer, DecodeRejectsOutOfRangeIds) {
  EXPECT_THROW(Tokenizer::byte_level().decode({256}), DataError);
  EXPECT_THROW(Tokenizer::byte_level().decode({-1}), DataError);
}

// ---- Splits and corpus formats ------------------------------------------------------------

TEST(Split, AsciiCutsAt90And95Percent) {
  std::string text;
  for (int i = 0; i < 100; ++i) text += static_cast<char>('a' + i % 26);
  TextSplits s = split_90_5_5(text);
  EXPECT_EQ(s.train, text.substr(0, 90));
  EXPECT_EQ(s.valid, text.substr(90, 5));
  EXPECT_EQ(s.test, text.substr(95));
}

TEST(Split, CutsMoveForwardPastMultiByteCharacters) {
  // é occupies bytes 89-90 and ✓ bytes 94-96, so the cuts at 90 and 95 move to 91 and 97.
  std::string text = std::string(89, 'a') + "\xC3\xA9" + "bbb" + "\xE2\x9C\x93" + "ccc";
  ASSERT_EQ(text.size(), 100u);
  TextSplits s = split_90_5_5(text);
  EXPECT_EQ(s.train.size(), 91u);
  EXPECT_EQ(s.valid, "bbb\xE2\x9C\x93");
  EXPECT_EQ(s.test, "ccc");
}

TEST(Split, TinyTextsSplitWithoutLoss) {
  for (const std::string& text : {std::string(""), std::string("a"), std::string("abc")}) {
    TextSplits s = split_90_5_5(text);
    EXPECT_EQ(s.train + s.valid + s.test, text);
  }
}

TEST(Corpus, Enwik8UsesStandardByteRanges) {
  TempDir dir;
  const size_t size = 100000010;
  std::string bytes(size, '\0');
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>(i % 251);
  fs::path file = dir.path() / "enwik8";
  FILE* f = std::fopen(file.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(std::fwrite(bytes.data(), 1, size, f), size);
  std::fclose(f);

  TextSplits s = load_text_splits(file.string(), "enwik8");
  EXPECT_EQ(s.train.size(), 90000000u);
  EXPECT_EQ(s.valid.size(), 5000000u);
  EXPECT_EQ(s.test.size(), 5000000u);
  EXPECT_EQ(s.valid[0], static_cast<char>(90000000 % 251));
  EXPECT_EQ(s.test[0], static_cast<char>(95000000 % 251));
  EXPECT_EQ(s.test.back(), static_cast<char>(99999999 % 251));
  EXPECT_EQ(s.description.rfind("enwik8:", 0), 0u);
}

TEST(Corpus, Text8TooShortIsAnError) {
  TempDir dir;
  std::string text = "anarchism originated as a term of abuse";
  fs::path file = dir.write("text8", text);
  std::string msg = data_error_message([&] { load_text_splits(file.string(), "text8"); });
  EXPECT_NE(msg.find(std::to_string(text.size()) + " bytes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("100,000,000"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--format text"), std::string::npos) << msg;
}

TEST(Corpus, Wikitext103ReadsTheThreeFiles) {
  TempDir dir;
  dir.write("wiki.train.tokens", " = Valkyria = \n the game <unk> \n");
  dir.write("wiki.valid.tokens", " = Robert = \n");
  dir.write("wiki.test.tokens", " = Tower = \n");
  for (const char* format : {"wikitext103", "auto"}) {
    TextSplits s = load_text_splits(dir.path().string(), format);
    EXPECT_EQ(s.train, " = Valkyria = \n the game <unk> \n") << format;
    EXPECT_EQ(s.valid, " = Robert = \n") << format;
    EXPECT_EQ(s.test, " = Tower = \n") << format;
  }
  EXPECT_EQ(default_tokenizer("wikitext103"), "word");
  Dataset d = load_dataset(dir.path().string(), "auto", "auto");
  EXPECT_EQ(d.tokenizer.kind(), "word");
  EXPECT_EQ(d.tokenizer.decode(d.valid), "= <unk> =\n");  // "Robert" is not in train
}

TEST(Corpus, Wikitext103MissingFileIsNamed) {
  TempDir dir;
  dir.write("wiki.train.tokens", "a\n");
  dir.write("wiki.test.tokens", "a\n");
  std::string msg =
      data_error_message([&] { load_text_splits(dir.path().string(), "wikitext103"); });
  EXPECT_NE(msg.find("wiki.valid.tokens"), std::string::npos) << msg;
}

TEST(Corpus, FortunesReadsPlainFilesAndDropsSeparators) {
  TempDir dir;
  dir.write("a", "first fortune\n%\nsecond\n%\nnot a separator: %%\n%");
  dir.write("a.dat", "INDEX");
  dir.write("b.u8", "LINKED COPY");
  dir.write("sub/c", "from a subfolder\n%\n");
  fs::create_symlink(dir.path() / "a", dir.path() / "link");
  ScopedEnv env("OUROBOROS_FORTUNES_DIR", dir.path().string());

  TextSplits s = load_text_splits("ignored", "fortunes");
  EXPECT_EQ(s.train + s.valid + s.test,
            "first fortune\nsecond\nnot a separator: %%\nfrom a subfolder\n");
  EXPECT_EQ(s.description.rfind("fortunes: 2 files,", 0), 0u) << s.description;
  EXPECT_EQ(default_tokenizer("fortunes"), "char");
}

TEST(Corpus, FortunesMissingDirectoryHintsAtPackages) {
  TempDir dir;
  ScopedEnv env("OUROBOROS_FORTUNES_DIR", (dir.path() / "none").string());
  std::string msg = data_error_message([&] { load_text_splits("", "fortunes"); });
  EXPECT_NE(msg.find("apt-get install fortunes fortunes-min"), std::string::npos) << msg;
}

TEST(Corpus, TextDirectoryIsReadInSortedOrder) {
  TempDir dir;
  dir.write("b.txt", "B");
  dir.write("a/z.txt", "AZ");
  dir.write("a.txt", "A");
  dir.write("c.txt", "C\n");
  dir.write(".hidden", "HIDDEN");
  TextSplits s = load_text_splits(dir.path().string(), "text");
  EXPECT_EQ(s.train + s.valid + s.test,
            "AZAB"
            "C\n");  // a/z.txt, a.txt, b.txt, c.txt
  EXPECT_EQ(s.description,
            "text: 4 files, 6 B, split 90/5/5 by bytes; read a/z.txt, a.txt, b.txt and 1 more");
  TextSplits single = load_text_splits((dir.path() / "c.txt").string(), "auto");
  EXPECT_EQ(single.train + single.valid + single.test, "C\n");
}

// A directory contributes its text files only: binaries (a NUL byte) and a run's own outputs
// (an out-dir inside the data directory) are skipped and counted.
TEST(Corpus, TextDirectorySkipsBinariesAndRunOutputs) {
  TempDir dir;
  dir.write("notes.txt", "hello\n");
  dir.write("prog", std::string("\x7f"
                                "ELF\0\0\1",
                                7));
  dir.write("runs/a/ckpt.pt", "PK zip bytes");
  dir.write("runs/a/ckpt.pt.tmp.12.0", "half a checkpoint");
  dir.write("runs/a/metrics.jsonl", "{\"step\": 10}\n");
  TextSplits s = load_text_splits(dir.path().string(), "text");
  EXPECT_EQ(s.train + s.valid + s.test, "hello\n");
  EXPECT_EQ(s.description,
            "text: 1 file, 6 B, split 90/5/5 by bytes; read notes.txt; skipped 4 files (binary or "
            "run outputs)");
}

TEST(Corpus, MissingAndEmptyCorporaAreErrors) {
  TempDir dir;
  std::string missing = (dir.path() / "nope.txt").string();
  std::string msg = data_error_message([&] { load_text_splits(missing, "text"); });
  EXPECT_NE(msg.find("corpus not found: " + missing), std::string::npos) << msg;
  msg = data_error_message([&] { load_text_splits(missing, "enwik8"); });
  EXPECT_NE(msg.find("corpus not found: " + missing), std::string::npos) << msg;

  std::string empty = dir.write("empty.txt", "").string();
  msg = data_error_message([&] { load_text_splits(empty, "text"); });
  EXPECT_NE(msg.find("corpus is empty: " + empty), std::string::npos) << msg;
  std::string blank = dir.write("blank.txt", " \n\t\n").string();
  msg = data_error_message([&] { load_text_splits(blank, "auto"); });
  EXPECT_NE(msg.find("corpus is empty: " + blank), std::string::npos) << msg;
}

TEST(Corpus, UnknownFormatListsValidOnes) {
  std::string msg = data_error_message([&] { load_text_splits("x", "csv"); });
  EXPECT_NE(msg.find("'csv'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("text, enwik8, text8, wikitext103, fortunes, auto"), std::string::npos);
  EXPECT_THROW(default_tokenizer("csv"), DataError);
}

TEST(Dataset, LoadsAndTokenizesAllSplits) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 10; ++i) text += "abcdefghi\n";  // 100 bytes
  fs::path file = dir.write("corpus.txt", text);
  Dataset d = load_dataset(file.string(), "text", "auto");
  EXPECT_EQ(d.tokenizer.kind(), "char");
  EXPECT_EQ(d.tokenizer.vocab_size(), 11);  // \n, a..i, <unk>
  EXPECT_EQ(d.train.size(), 90u);
  EXPECT_EQ(d.split("valid").size(), 5u);
  EXPECT_EQ(d.split("test").size(), 5u);
  EXPECT_EQ(d.tokenizer.decode(d.split("train")), text.substr(0, 90));
  EXPECT_NE(d.description.find("char tokenizer, vocab 11"), std::string::npos) << d.description;
  EXPECT_THROW(d.split("dev"), DataError);

  Dataset bytes = load_dataset(file.string(), "text", Tokenizer::byte_level());
  EXPECT_EQ(bytes.tokenizer.kind(), "byte");
  EXPECT_EQ(bytes.test, (std::vector<int32_t>{'f', 'g', 'h', 'i', '\n'}));
  EXPECT_THROW(load_dataset(file.string(), "text", "bpe"), DataError);
}

TEST(Dataset, DefaultTokenizers) {
  EXPECT_EQ(default_tokenizer("enwik8"), "byte");
  EXPECT_EQ(default_tokenizer("text8"), "char");
  EXPECT_EQ(default_tokenizer("text"), "char");
  EXPECT_EQ(default_tokenizer("auto"), "char");
}

// ---- Batches and evaluation windows -------------------------------------------------------

TEST(SplitMix64, MatchesReferenceOutputs) {
  SplitMix64 rng{0};  // reference values of splitmix64 seeded with 0
  EXPECT_EQ(rng.next(), 0xE220A8397B1DCDAFULL);
  EXPECT_EQ(rng.next(), 0x6E789E6AA1B965F4ULL);
  EXPECT_EQ(rng.next(), 0x06C45D188009454FULL);
}

TEST(BatchSampler, WindowsFollowTheSeededGenerator) {
  std::vector<int32_t> tokens(50);
  for (int i = 0; i < 50; ++i) tokens[i] = 1000 + i;
  const int64_t T = 8, B = 4;
  BatchSampler sampler(tokens, T, B, 1234);
  auto [x, y] = sampler.next();
  ASSERT_EQ(x.sizes().vec(), (std::vector<int64_t>{B, T}));
  ASSERT_EQ(y.sizes().vec(), (std::vector<int64_t>{B, T}));
  EXPECT_EQ(x.dtype(), torch::kInt64);

  SplitMix64 rng{1234};
  for (int64_t b = 0; b < B; ++b) {
    int64_t start = static_cast<int64_t>(rng.next() % (50 - T));
    std::vector<int64_t> want_x, want_y;
    for (int64_t t = 0; t < T; ++t) {
      want_x.push_back(1000 + start + t);
      want_y.push_back(1000 + start + t + 1);
    }
    EXPECT_EQ(row(x, b), want_x);
    EXPECT_EQ(row(y, b), want_y);
  }
  EXPECT_EQ(sampler.state(), rng.state);

  // Restoring the state replays the same batch (checkpoint resume).
  uint64_t saved = sampler.state();
  auto [x2, y2] = sampler.next();
  sampler.set_state(saved);
  EXPECT_TRUE(torch::equal(sampler.next().first, x2));
}

TEST(BatchSampler, ShortestCorpusAlwaysStartsAtZero) {
  std::vector<int32_t> tokens = {5, 6, 7, 8};
  BatchSampler sampler(tokens, 3, 2, 99);
  auto [x, y] = sampler.next();
  EXPECT_EQ(row(x, 1), (std::vector<int64_t>{5, 6, 7}));
  EXPECT_EQ(row(y, 1), (std::vector<int64_t>{6, 7, 8}));
}

TEST(BatchSampler, TooShortCorpusIsAnError) {
  std::vector<int32_t> tokens = {1, 2, 3};
  std::string msg = data_error_message([&] { BatchSampler(tokens, 3, 1, 0); });
  EXPECT_NE(msg.find("corpus split has 3 tokens, fewer than one window of block_size+1 = 4"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("--block-size"), std::string::npos) << msg;
}

TEST(EvalWindows, CountsWholeWindowsWithTargets) {
  // Window j needs jT + T + 1 <= N.
  EXPECT_EQ(num_eval_windows(10, 3), 3);
  EXPECT_EQ(num_eval_windows(9, 3), 2);
  EXPECT_EQ(num_eval_windows(7, 3), 2);
  EXPECT_EQ(num_eval_windows(6, 3), 1);
  EXPECT_EQ(num_eval_windows(4, 3), 1);
  EXPECT_EQ(num_eval_windows(3, 3), 0);
  EXPECT_EQ(num_eval_windows(0, 3), 0);
}

TEST(EvalWindows, StacksConsecutiveWindows) {
  std::vector<int32_t> tokens = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  auto [x, y] = eval_windows(tokens, 3, 0, 2);
  ASSERT_EQ(x.sizes().vec(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(row(x, 0), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(row(x, 1), (std::vector<int64_t>{3, 4, 5}));
  EXPECT_EQ(row(y, 0), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(row(y, 1), (std::vector<int64_t>{4, 5, 6}));
  auto [x_last, y_last] = eval_windows(tokens, 3, 2, 1);
  EXPECT_EQ(row(x_last, 0), (std::vector<int64_t>{6, 7, 8}));
  EXPECT_EQ(row(y_last, 0), (std::vector<int64_t>{7, 8, 9}));
  EXPECT_THROW(eval_windows(tokens, 3, 2, 2), DataError);
  EXPECT_THROW(eval_windows(tokens, 3, -1, 1), DataError);
}

}  // namespace
}  // namespace ouroboros
