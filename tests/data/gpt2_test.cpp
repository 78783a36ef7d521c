// label: unit
// The gpt2 tokenizer (GPT-2's byte-level BPE): the ids of Hugging Face's `tokenizers` on text in
// every script, from tokenizer.json and from vocab.json + merges.txt; exact round trips of any
// bytes; restoring from the saved model; one-line refusals of missing, damaged and other files.
// The comparisons with `tokenizers` skip where the Python environment lacks it.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data_util.h"
#include "ouroboros/core/errors.h"
#include "ouroboros/data/dataset.h"
#include "test_util.h"

namespace ouroboros {
namespace {

namespace fs = std::filesystem;
using ouroboros_test::data_error_message;
using ouroboros_test::run_command;
using ouroboros_test::TempDir;

// Text of every kind GPT-2's pattern tells apart.
const std::vector<std::string>& texts() {
  static const std::vector<std::string> t = {
      "Ça va? Déjà vu — naïve façade, crème brûlée, Ångström, Łódź, ñandú, Øresund.",
      "Ελληνικά: Καλημέρα κόσμε, ὅτι ἀληθῶς ἐστίν.",
      "Привет, мир! Съешь же ещё этих мягких французских булок.",
      "مرحبا بالعالم، هذا اختبار للنص العربي.",
      "שלום עולם! זהו מבחן של טקסט בעברית.",
      "नमस्ते दुनिया, यह एक परीक्षण है। हिन्दी पाठ।",
      "สวัสดีชาวโลก นี่คือการทดสอบภาษาไทย",
      "你好，世界！这是一个测试。日本語のテキスト、カタカナとひらがな。",
      "안녕하세요 세계, 한국어 테스트입니다.",
      "I ❤️ 🍕! 👨‍👩‍👧‍👦 family,"
      " 👍🏽👍🏿 thumbs,"
      " 🏳️‍🌈 flag, 😀😀😀 🇫🇷",
      "e\u0301 a\u0308 n\u0303 Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇ क्षि",
      "In 2024, 1,234,567.89 people paid $3.50 (or €1 000,5); call 555-1234 at 12:30 on "
      "2024-01-05. ½ ² ٣٤٥ ४२ 1e-9 0x1F",
      "It's what they're saying: we've, I'm, you'll, he'd. SHE'S 'LL 'Re don't ' s 'll'd",
      "Wait... what?!?! --- ((nested)) [brackets] {braces} <<>> @#$%^&*~`|\\ ''' \"\"\" ...",
      "a  b   c\t\td\n\ne \n \n  f\r\n\tg   \nend   ",
      "   leading spaces and trailing\n\n\n",
      "",
      "first document<|endoftext|>second document <|endoftext|><|endoftext|> third<|endoftext",
      "a\u00a0b\u3000c\u2028d\u0085e\x0b"
      "f\x0cg\x1ch \u2009thin\u200bzero\ufeffbom",
      "antidisestablishmentarianism supercalifragilisticexpialidocious the the the",
  };
  return t;
}

std::string read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// One tokenizer trained by `tokenizers` for all tests, with its reference encodings of texts().
class Gpt2Test : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    python_ = ouroboros_test::python_with("tokenizers");
    if (python_.empty()) return;
    dir_ = new TempDir();
    dir_->write("texts.json", nlohmann::json(texts()).dump());
    const std::string script = std::string(OUROBOROS_SOURCE_DIR) + "/tests/data/gpt2_reference.py";
    const auto [output, code] =
        run_command(python_ + " " + script + " train " + dir_->path().string() + " 2>&1");
    ASSERT_EQ(code, 0) << output;
    expected_ = nlohmann::json::parse(read(dir_->path() / "expected.json"));
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (python_.empty())
      GTEST_SKIP() << "Python's tokenizers is not installed (scripts/python-env.sh)";
  }

  // Every text encodes to the reference ids and decodes back to itself, as `tokenizers` decodes.
  static void expect_reference_ids(const Tokenizer& tok, const nlohmann::json& expected) {
    ASSERT_EQ(tok.vocab_size(), expected.at("vocab_size").get<int64_t>());
    for (size_t i = 0; i < texts().size(); ++i) {
      const std::vector<int32_t> ids = tok.encode(texts()[i]);
      EXPECT_EQ(ids, expected.at("ids").at(i).get<std::vector<int32_t>>()) << texts()[i];
      EXPECT_EQ(tok.decode(ids), expected.at("decoded").at(i).get<std::string>()) << texts()[i];
      EXPECT_EQ(tok.decode(ids), texts()[i]);
    }
  }

  static std::string python_;
  static TempDir* dir_;
  static nlohmann::json expected_;
};

std::string Gpt2Test::python_;
TempDir* Gpt2Test::dir_ = nullptr;
nlohmann::json Gpt2Test::expected_;

TEST_F(Gpt2Test, TokenizerJsonGivesTheIdsOfHuggingFaceTokenizers) {
  ASSERT_GT(expected_.at("merges").get<int>(), 300) << "too few merges to test merging";
  const Tokenizer tok = Tokenizer::from_file((dir_->path() / "tokenizer.json").string());
  EXPECT_EQ(tok.kind(), "gpt2");
  EXPECT_EQ(tok.unk_id(), -1);
  EXPECT_FALSE(tok.is_character_level());
  expect_reference_ids(tok, expected_);
  // <|endoftext|> in text is the added token, id 0 as the trainer placed it.
  EXPECT_EQ(tok.encode("<|endoftext|>"), std::vector<int32_t>{0});
  EXPECT_EQ(tok.vocab()[0], "<|endoftext|>");
}

TEST_F(Gpt2Test, DirectoriesWithEitherFormGiveTheSameIds) {
  const Tokenizer from_json = Tokenizer::from_file(dir_->path().string());
  const Tokenizer from_pair = Tokenizer::from_file((dir_->path() / "pair").string());
  EXPECT_EQ(from_pair.vocab(), from_json.vocab());
  expect_reference_ids(from_pair, expected_);
}

// The saved model is a tokenizer.json that rebuilds the same tokenizer and that `tokenizers`
// loads with the same ids: it is what checkpoints keep and export writes.
TEST_F(Gpt2Test, SavedModelRebuildsTheTokenizerAndLoadsInTokenizers) {
  const Tokenizer tok = Tokenizer::from_file((dir_->path() / "tokenizer.json").string());
  const Tokenizer again = Tokenizer::from_model("gpt2", tok.model_proto());
  EXPECT_EQ(again.vocab(), tok.vocab());
  EXPECT_EQ(again.model_proto(), tok.model_proto());
  expect_reference_ids(again, expected_);

  const fs::path saved = dir_->write("saved/tokenizer.json", tok.model_proto());
  const fs::path out = dir_->path() / "saved.json";
  const std::string script = std::string(OUROBOROS_SOURCE_DIR) + "/tests/data/gpt2_reference.py";
  const auto [output, code] =
      run_command(python_ + " " + script + " encode " + saved.string() + " " +
                  (dir_->path() / "texts.json").string() + " " + out.string() + " 2>&1");
  ASSERT_EQ(code, 0) << output;
  const nlohmann::json reloaded = nlohmann::json::parse(read(out));
  EXPECT_EQ(reloaded.at("ids"), expected_.at("ids"));
  EXPECT_EQ(reloaded.at("decoded"), expected_.at("decoded"));
}

// Bytes that are not UTF-8 are pre-tokens of their own, each its byte's token: any byte string
// comes back exactly, and the valid text around them encodes as it would alone.
TEST_F(Gpt2Test, AnyBytesRoundTrip) {
  const Tokenizer tok = Tokenizer::from_file((dir_->path() / "tokenizer.json").string());
  for (const std::string& s :
       {std::string("\xff\xfe"), std::string("caf\xc3"), std::string("\xe4\xbd world"),
        std::string("\xed\xa0\x80 surrogate"), std::string("\xc0\xaf overlong"),
        std::string("nul\0byte", 8), std::string("\xf4\x90\x80\x80 above U+10FFFF")}) {
    EXPECT_EQ(tok.decode(tok.encode(s)), s);
  }
  const std::vector<int32_t> ids = tok.encode("Привет\xff мир");
  std::vector<int32_t> expected = tok.encode("Привет");
  expected.push_back(tok.encode("\xff").at(0));
  for (int32_t id : tok.encode(" мир")) expected.push_back(id);
  EXPECT_EQ(ids, expected);
  EXPECT_EQ(tok.encode("\xff").size(), 1u);

  std::mt19937 rng(11);
  const std::string pieces[] = {"the ", "é", "中", "😀", "\n", "  ", "<|endoftext|>", "'s"};
  for (int trial = 0; trial < 300; ++trial) {
    std::string s;
    const int n = static_cast<int>(rng() % 60);
    for (int k = 0; k < n; ++k) {
      if (rng() % 3 == 0)
        s += pieces[rng() % 8];
      else
        s += static_cast<char>(rng() % 256);
    }
    ASSERT_EQ(tok.decode(tok.encode(s)), s) << "trial " << trial;
  }
}

// A tokenizer.json made of the parts named, the rest GPT-2's.
nlohmann::json tokenizer_json(const std::string& model_type, const std::string& pre_tokenizer) {
  return {{"added_tokens", nlohmann::json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", pre_tokenizer}, {"add_prefix_space", false}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model",
           {{"type", model_type}, {"vocab", {{"a", 0}}}, {"merges", nlohmann::json::array()}}}};
}

TEST(Gpt2Files, AreRefusedInOneLineWhenMissingDamagedOrOfAnotherKind) {
  TempDir dir;
  auto message = [&](const std::string& path) {
    return data_error_message([&] { Tokenizer::from_file(path); });
  };
  EXPECT_NE(message((dir.path() / "none.json").string()).find("does not exist"), std::string::npos);
  EXPECT_NE(message(dir.path().string()).find("holds neither tokenizer.json nor vocab.json"),
            std::string::npos);
  EXPECT_NE(message(dir.write("cut.json", "{\"model\": {\"type\": \"BPE\"").string())
                .find("is not valid JSON"),
            std::string::npos);
  EXPECT_NE(
      message(dir.write("word.json", tokenizer_json("WordLevel", "ByteLevel").dump()).string())
          .find("its model is WordLevel, not BPE"),
      std::string::npos);
  EXPECT_NE(message(dir.write("ws.json", tokenizer_json("BPE", "Whitespace").dump()).string())
                .find("its pre-tokenizer is not ByteLevel"),
            std::string::npos);
  // A BPE model without the 256 byte tokens cannot encode every text.
  EXPECT_NE(message(dir.write("bytes.json", tokenizer_json("BPE", "ByteLevel").dump()).string())
                .find("has no token for the byte 0"),
            std::string::npos);
  nlohmann::json far = tokenizer_json("BPE", "ByteLevel");
  far["added_tokens"].push_back({{"id", 2147483647}, {"content", "<|far|>"}});
  EXPECT_NE(message(dir.write("far.json", far.dump()).string()).find("past every other token's"),
            std::string::npos);
  EXPECT_NE(message(dir.write("vocab.json", "{\"a\": 0}").string()).find("it has no model"),
            std::string::npos);
  for (const std::string& m :
       {message((dir.path() / "none.json").string()), message(dir.path().string())}) {
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
  // Learning from text, or rebuilding from a vocabulary alone, is not how gpt2 is made.
  EXPECT_NE(
      data_error_message([] { Tokenizer::build("gpt2", "some text"); }).find("read from a file"),
      std::string::npos);
  EXPECT_THROW(Tokenizer::from_vocab("gpt2", {"a"}), DataError);
  EXPECT_NE(data_error_message([&] {
              load_dataset("x.txt", "text", "gpt2");
            }).find("needs a tokenizer file"),
            std::string::npos);
  EXPECT_NE(data_error_message([&] {
              load_dataset("x.txt", "text", "char", 0, "tok.json");
            }).find("the tokenizer is char"),
            std::string::npos);
}

}  // namespace
}  // namespace ouroboros
