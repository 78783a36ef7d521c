// label: unit
// Checkpoints: exact round trip, atomic writes, corrupt and mismatched files, and that Python's
// torch.load reads them (when a Python with torch is installed).
#include "ouroboros/train/checkpoint.h"

#include <gtest/gtest.h>

#include "checkpoint_util.h"
#include "test_util.h"

#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>

#include "ouroboros/core/errors.h"
#include "ouroboros/model/gpt.h"
#include "ouroboros/train/optim.h"

namespace ouroboros {
namespace {
namespace fs = std::filesystem;

using ouroboros_test::read_bytes;
using ouroboros_test::TempDir;

TEST(CheckpointTest, RoundTripRestoresEverything) {
  TempDir dir;
  const Checkpoint ck = make_checkpoint();
  const std::string path = (dir.path() / "ckpt.pt").string();
  save_checkpoint(path, ck);
  const Checkpoint back = load_checkpoint(path);

  ASSERT_EQ(back.model.names(), ck.model.names());
  for (size_t i = 0; i < ck.model.size(); ++i) {
    EXPECT_TRUE(torch::equal(back.model.tensors()[i], ck.model.tensors()[i]))
        << ck.model.names()[i];
  }
  EXPECT_EQ(back.config.to_json(), ck.config.to_json());
  EXPECT_EQ(back.config.train.lr, 0.003);
  EXPECT_EQ(back.tokenizer.kind(), "char");
  EXPECT_EQ(back.tokenizer.vocab(), ck.tokenizer.vocab());
  EXPECT_EQ(back.step, 2);
  EXPECT_EQ(back.sampler_state, 0xF00DFACECAFEBEEFULL);
  ASSERT_EQ(back.generator_states.size(), 2u);
  EXPECT_TRUE(torch::equal(back.generator_states[1], ck.generator_states[1]));

  // Adam state for every parameter: the step count and both moments.
  ASSERT_EQ(back.optimizer.size(), ck.model.size());
  for (const auto& name : ck.model.names()) {
    auto want = ck.optimizer.at(name).toGenericDict();
    auto got = back.optimizer.at(name).toGenericDict();
    EXPECT_EQ(got.at("step").toInt(), 2) << name;
    EXPECT_TRUE(torch::equal(got.at("exp_avg").toTensor(), want.at("exp_avg").toTensor())) << name;
    EXPECT_TRUE(torch::equal(got.at("exp_avg_sq").toTensor(), want.at("exp_avg_sq").toTensor()))
        << name;
  }
  EXPECT_GT(back.optimizer.at("wte.weight")
                .toGenericDict()
                .at("exp_avg_sq")
                .toTensor()
                .sum()
                .item<double>(),
            0.0);
}

// The run's id comes back, and is read alone; a file written before runs had ids has none, and
// an id that could not name a file is refused.
TEST(CheckpointTest, RunIdRoundTripsAndMayBeAbsent) {
  TempDir dir;
  Checkpoint ck = make_checkpoint();
  ck.run = "3f2a9c01d4e5b6a7";
  const std::string path = (dir.path() / "ckpt.pt").string();
  save_checkpoint(path, ck);
  EXPECT_EQ(load_checkpoint(path).run, "3f2a9c01d4e5b6a7");
  EXPECT_EQ(checkpoint_run(path), "3f2a9c01d4e5b6a7");

  ck.run = "";  // no "run" entry, as before ids
  save_checkpoint(path, ck);
  EXPECT_EQ(load_checkpoint(path).run, "");
  EXPECT_EQ(checkpoint_run(path), "");
  EXPECT_EQ(load_checkpoint(path).step, 2);

  ck.run = "../../etc/passwd";
  save_checkpoint(path, ck);
  EXPECT_NE(checkpoint_error([&] { load_checkpoint(path); }).find("has no valid 'run' entry"),
            std::string::npos);
  EXPECT_NE(checkpoint_error([&] { checkpoint_run(path); }).find("has no valid 'run' entry"),
            std::string::npos);
  EXPECT_EQ(checkpoint_dir("runs/a/ckpt.pt"), "runs/a");
  EXPECT_EQ(checkpoint_dir("runs/a/ckpt/"), "runs/a");
  EXPECT_EQ(checkpoint_dir("ckpt.pt"), ".");
}

TEST(CheckpointTest, AtomicWriteLeavesNoTemporaryFile) {
  TempDir dir;
  Checkpoint ck = make_checkpoint();
  const fs::path path = dir.path() / "nested" / "ckpt.pt";
  save_checkpoint(path.string(), ck);
  EXPECT_TRUE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));

  ck.step = 9;  // overwriting replaces the file whole
  save_checkpoint(path.string(), ck);
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));
  EXPECT_EQ(load_checkpoint(path.string()).step, 9);
  EXPECT_EQ(std::distance(fs::directory_iterator(path.parent_path()), fs::directory_iterator()), 1);
}

TEST(CheckpointTest, CorruptFilesAreCheckpointErrors) {
  TempDir dir;
  const fs::path good = dir.path() / "good.pt";
  save_checkpoint(good.string(), make_checkpoint());
  const std::string bytes = read_bytes(good);

  std::mt19937 rng(1);
  std::string noise(4096, '\0');
  for (char& c : noise) c = static_cast<char>(rng() & 0xFF);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"random.pt", noise},
      {"truncated.pt", bytes.substr(0, bytes.size() / 2)},
      {"header_only.pt", bytes.substr(0, 64)},
      {"empty.pt", ""},
      {"text.pt", "{\"model\": {}}\n"},
  };
  for (const auto& [name, content] : cases) {
    const fs::path file = dir.path() / name;
    write_bytes(file, content);
    const std::string msg = checkpoint_error([&] { load_checkpoint(file.string()); });
    EXPECT_NE(msg.find(file.string()), std::string::npos) << name << ": " << msg;
    EXPECT_NE(msg.find("corrupt"), std::string::npos) << name << ": " << msg;
  }
  const std::string missing =
      checkpoint_error([&] { load_checkpoint((dir.path() / "no.pt").string()); });
  EXPECT_NE(missing.find("checkpoint not found"), std::string::npos) << missing;
}

TEST(CheckpointTest, IncompatibleCheckpointsNameTheProblem) {
  const Checkpoint ck = make_checkpoint();
  EXPECT_NO_THROW(check_compatible(ck, ck.config.model, ck.tokenizer, "ck.pt"));

  ModelConfig deeper = ck.config.model;
  deeper.n_layer = 3;
  std::string msg = checkpoint_error([&] { check_compatible(ck, deeper, ck.tokenizer, "ck.pt"); });
  EXPECT_NE(msg.find("checkpoint ck.pt has n_layer 2 but the run asks for 3"), std::string::npos)
      << msg;

  ModelConfig wider = ck.config.model;
  wider.n_embd = 16;
  msg = checkpoint_error([&] { check_compatible(ck, wider, ck.tokenizer, "ck.pt"); });
  EXPECT_NE(msg.find("n_embd 8"), std::string::npos) << msg;

  // Same size, other symbols: only the vocabulary check can tell.
  const Tokenizer other = Tokenizer::build("char", "HELLO WORLD, HéLLO");
  ASSERT_EQ(other.vocab_size(), ck.tokenizer.vocab_size());
  msg = checkpoint_error([&] { check_compatible(ck, ck.config.model, other, "ck.pt"); });
  EXPECT_NE(msg.find("another vocabulary"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ck.pt"), std::string::npos) << msg;
}

using ouroboros_test::run_command;

bool python_torch_missing(std::string* why) {
  if (!fs::exists("/usr/bin/python3")) {
    *why = "/usr/bin/python3 is not installed";
    return true;
  }
  if (run_command("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1").second != 0) {
    *why = "/usr/bin/python3 cannot import torch (install python3-torch)";
    return true;
  }
  return false;
}

TEST(CheckpointTest, PythonTorchLoadReadsIt) {
  std::string why;
  if (python_torch_missing(&why)) GTEST_SKIP() << why;
  TempDir dir;
  const fs::path path = dir.path() / "ckpt.pt";
  save_checkpoint(path.string(), make_checkpoint());
  const std::string script =
      "import sys, torch; d = torch.load(sys.argv[1]); "
      "print(sorted(d.keys())); "
      "print(list(d['model']['h.0.attn.c_attn.weight'].shape)); "
      "print(d['format_version'], d['step'], len(d['model']), d['tokenizer']['kind'])";
  auto [out, rc] = run_command("/usr/bin/python3 -c \"" + script + "\" " + path.string() + " 2>&1");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(out,
            "['checksums', 'config', 'format_version', 'model', 'optimizer', 'rng', 'step', "
            "'tokenizer']\n"
            "[24, 8]\n"
            "3 2 28 char\n");
}

// Every tokenizer's vocabulary, including symbols that are not UTF-8 (all byte symbols above
// 0x7f, a stray byte read as its own char, a word holding one), opens in Python as bytes and
// comes back the same; a format-1 file (the vocabulary pickled as text) still loads.
TEST(CheckpointTest, EveryVocabularyOpensInPython) {
  std::string why;
  if (python_torch_missing(&why)) GTEST_SKIP() << why;
  TempDir dir;
  const std::string text = "caf\xc3\xa9 \xff\xfe odd\nline two\n";
  for (const std::string kind : {"byte", "char", "word"}) {
    Checkpoint ck = make_checkpoint();
    ck.tokenizer = Tokenizer::build(kind, text);
    const fs::path path = dir.path() / (kind + ".pt");
    save_checkpoint(path.string(), ck);
    // Python writes each symbol as hex, one per line; the C++ side rebuilds them.
    const std::string script =
        "import sys, torch; t = torch.load(sys.argv[1])['tokenizer']; "
        "b = bytes(t['vocab_bytes'].numpy()); o = t['vocab_offsets'].tolist(); "
        "print(t['kind']); [print(b[o[i]:o[i + 1]].hex()) for i in range(len(o) - 1)]";
    auto [out, rc] =
        run_command("/usr/bin/python3 -c \"" + script + "\" " + path.string() + " 2>&1");
    ASSERT_EQ(rc, 0) << kind << ": " << out;
    std::istringstream lines(out);
    std::string line;
    std::getline(lines, line);
    EXPECT_EQ(line, kind);
    std::vector<std::string> vocab;
    while (std::getline(lines, line)) {
      std::string symbol;
      for (size_t i = 0; i + 1 < line.size(); i += 2) {
        symbol += static_cast<char>(std::stoi(line.substr(i, 2), nullptr, 16));
      }
      vocab.push_back(symbol);
    }
    EXPECT_EQ(vocab, ck.tokenizer.vocab()) << kind;
    EXPECT_EQ(load_checkpoint(path.string()).tokenizer.vocab(), ck.tokenizer.vocab()) << kind;
  }
  // Format 1, as earlier builds wrote it, made here by Python from a format-2 file.
  Checkpoint ck = make_checkpoint();
  const fs::path v2 = dir.path() / "v2.pt", v1 = dir.path() / "v1.pt";
  save_checkpoint(v2.string(), ck);
  const std::string to_v1 =
      "import sys, torch; d = torch.load(sys.argv[1]); t = d['tokenizer']; "
      "b = bytes(t['vocab_bytes'].numpy()); o = t['vocab_offsets'].tolist(); "
      "d['tokenizer'] = {'kind': t['kind'], "
      "'vocab': [b[o[i]:o[i + 1]].decode() for i in range(len(o) - 1)]}; "
      "d['format_version'] = 1; torch.save(d, sys.argv[2])";
  auto [out, rc] = run_command("/usr/bin/python3 -c \"" + to_v1 + "\" " + v2.string() + " " +
                               v1.string() + " 2>&1");
  ASSERT_EQ(rc, 0) << out;
  const Checkpoint back = load_checkpoint(v1.string());
  EXPECT_EQ(back.tokenizer.vocab(), ck.tokenizer.vocab());
  EXPECT_EQ(back.step, ck.step);
}

// A bpe checkpoint also holds its sentencepiece model (tokenizer.model, uint8): torch.load opens
// it, Python's sentencepiece (where installed) loads those bytes and encodes as the C++ side
// does, and load_checkpoint restores the tokenizer from them; a missing or damaged model fails
// with one line.
TEST(CheckpointTest, SubwordModelOpensInPython) {
  std::string why;
  if (python_torch_missing(&why)) GTEST_SKIP() << why;
  if (!Tokenizer::subword_available(&why)) GTEST_SKIP() << why;
  TempDir dir;
  std::string text;
  for (int i = 0; i < 300; ++i) {
    text += "the cat  sat on mat " + std::to_string(i % 17) + (i % 3 ? " caf\xc3\xa9\n" : "\n");
  }
  Checkpoint ck = make_checkpoint();
  ck.tokenizer = Tokenizer::build("bpe", text, 300);
  const fs::path path = dir.path() / "bpe.pt";
  save_checkpoint(path.string(), ck);
  const Checkpoint back = load_checkpoint(path.string());
  EXPECT_EQ(back.tokenizer.kind(), "bpe");
  EXPECT_EQ(back.tokenizer.vocab(), ck.tokenizer.vocab());
  EXPECT_EQ(back.tokenizer.model_proto(), ck.tokenizer.model_proto());

  const std::string probe = "the mat  sat on 12\ncaf\xc3\xa9 at 3\n\nthe cat\n";
  const fs::path probe_file = dir.write("probe.txt", probe);
  const fs::path script = dir.write("check.py", R"(import importlib.util, sys, torch
t = torch.load(sys.argv[1])['tokenizer']
m = t['model']
print(t['kind'], m.dtype, m.dim(), len(t['vocab_offsets']) - 1)
if importlib.util.find_spec('sentencepiece') is None:
    print('no sentencepiece')
else:
    import sentencepiece
    sp = sentencepiece.SentencePieceProcessor()
    sp.LoadFromSerializedProto(bytes(m.numpy()))
    text = open(sys.argv[2], encoding='utf-8').read()
    print(sp.GetPieceSize(), ' '.join(str(i) for i in sp.EncodeAsIds(text)))
)");
  auto [out, rc] = run_command("/usr/bin/python3 " + script.string() + " " + path.string() + " " +
                               probe_file.string() + " 2>&1");
  ASSERT_EQ(rc, 0) << out;
  std::istringstream lines(out);
  std::string line;
  std::getline(lines, line);
  EXPECT_EQ(line, "bpe torch.uint8 1 300");
  std::getline(lines, line);
  if (line != "no sentencepiece") {
    std::string expected = "300";
    for (int32_t id : ck.tokenizer.encode(probe)) expected += " " + std::to_string(id);
    EXPECT_EQ(line, expected);
  }

  // The same file without its model, and with bytes that are no model.
  const fs::path missing = dir.path() / "missing.pt", damaged = dir.path() / "damaged.pt";
  auto [out2, rc2] = run_command(
      "/usr/bin/python3 -c \"import sys, torch; d = torch.load(sys.argv[1]); "
      "del d['tokenizer']['model']; torch.save(d, sys.argv[2]); "
      "d['tokenizer']['model'] = torch.tensor([7, 1, 2], dtype=torch.uint8); "
      "torch.save(d, sys.argv[3])\" " +
      path.string() + " " + missing.string() + " " + damaged.string() + " 2>&1");
  ASSERT_EQ(rc2, 0) << out2;
  for (const auto& [file, expected] : {std::pair{missing, "without its sentencepiece model"},
                                       std::pair{damaged, "does not load"}}) {
    try {
      load_checkpoint(file.string());
      ADD_FAILURE() << "expected a CheckpointError for " << file;
    } catch (const CheckpointError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(expected), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
}

}  // namespace
}  // namespace ouroboros
