// label: unit
// `ouroboros export --format hf`: the safetensors file holds every tensor in GPT-2's Conv1D layout,
// refusals are one line, and where transformers is importable the exported model gives
// ouroboros' logits (relative difference below 1e-5) and its tokenizer decodes and encodes as
// ouroboros' own does, for byte, char, word and gpt2 vocabularies.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "ouroboros/model/gpt.h"
#include "ouroboros/train/checkpoint.h"
#include "ouroboros/train/export.h"

namespace ouroboros {
namespace {

namespace fs = std::filesystem;
using ouroboros_test::cli;
using ouroboros_test::CliRun;
using ouroboros_test::run_command;
using ouroboros_test::TempDir;

nlohmann::json safetensors_header(const fs::path& file, uint64_t* data_bytes) {
  std::ifstream in(file, std::ios::binary);
  unsigned char size[8];
  in.read(reinterpret_cast<char*>(size), 8);
  uint64_t n = 0;
  for (int b = 7; b >= 0; --b) n = (n << 8) | size[b];
  std::string text(n, '\0');
  in.read(text.data(), static_cast<std::streamsize>(n));
  *data_bytes = fs::file_size(file) - 8 - n;
  EXPECT_EQ((8 + n) % 8, 0u) << "data not 8-byte aligned";
  return nlohmann::json::parse(text);
}

// A tiny GPT trained for a few steps on text with the given tokenizer; returns its checkpoint.
// gpt2 reads the tiny tokenizer file of cli_util.h.
fs::path train_tiny(const TempDir& dir, const std::string& tokenizer, const std::string& text) {
  const fs::path corpus = dir.write(tokenizer + ".txt", text);
  const fs::path out = dir.path() / ("run-" + tokenizer);
  std::map<std::string, std::string> flags = {{"--data", corpus.string()},
                                              {"--tokenizer", tokenizer},
                                              {"--n-layer", "2"},
                                              {"--out-dir", out.string()}};
  if (tokenizer == "gpt2") {
    flags["--tokenizer-file"] =
        dir.write("gpt2/tokenizer.json", ouroboros_test::tiny_gpt2_tokenizer_json()).string();
  }
  CliRun r = cli(ouroboros_test::train_flags(flags));
  EXPECT_EQ(r.code, 0) << r.output;
  return out / "ckpt.pt";
}

TEST(Export, SafetensorsHoldTheModelInConv1DLayout) {
  TempDir dir;
  const fs::path ckpt = train_tiny(dir, "char", ouroboros_test::tiny_corpus(3000));
  const fs::path out = dir.path() / "hf";
  CliRun r = cli("export --checkpoint " + ckpt.string() + " --format hf --out " + out.string());
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("char tokenizer as tokenizer.json"), std::string::npos) << r.output;
  for (const char* f :
       {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}) {
    EXPECT_TRUE(fs::exists(out / f)) << f;
  }
  const Checkpoint ck = load_checkpoint(ckpt.string());
  uint64_t data_bytes = 0;
  const nlohmann::json h = safetensors_header(out / "model.safetensors", &data_bytes);
  EXPECT_EQ(h.size(), ck.model.size() + 1);  // + __metadata__
  EXPECT_EQ(data_bytes, static_cast<uint64_t>(ck.model.numel()) * 4);
  const int64_t C = ck.config.model.n_embd;
  EXPECT_EQ(h["transformer.h.1.attn.c_attn.weight"]["shape"], nlohmann::json({C, 3 * C}));
  EXPECT_EQ(h["transformer.h.0.mlp.c_proj.weight"]["shape"], nlohmann::json({4 * C, C}));
  EXPECT_EQ(h["transformer.wte.weight"]["shape"], nlohmann::json({ck.config.model.vocab_size, C}));
  // The bytes of a transposed tensor are the transpose of the checkpoint's.
  const auto off = h["transformer.h.0.attn.c_proj.weight"]["data_offsets"];
  std::ifstream in(out / "model.safetensors", std::ios::binary);
  uint64_t header = 0;
  in.read(reinterpret_cast<char*>(&header), 8);
  in.seekg(static_cast<std::streamoff>(8 + header + off[0].get<uint64_t>()));
  Tensor stored = torch::empty({C, C});
  in.read(static_cast<char*>(stored.data_ptr()), C * C * 4);
  EXPECT_TRUE(torch::equal(stored, ck.model.at("h.0.attn.c_proj.weight").t().contiguous()));
  const nlohmann::json config = nlohmann::json::parse(std::ifstream(out / "config.json"));
  EXPECT_EQ(config["n_layer"], 2);
  EXPECT_EQ(config["n_positions"], ck.config.model.block_size);
  EXPECT_EQ(config["activation_function"], "gelu_new");

  // A used directory is refused and left alone; --overwrite replaces its files.
  const std::string before = ouroboros_test::read_bytes(out / "config.json");
  r = cli("export --checkpoint " + ckpt.string() + " --out " + out.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.output, "error: export: " + out.string() +
                          " is not empty (hint: give a new "
                          "directory with --out, or --overwrite to replace its files)\n");
  EXPECT_EQ(ouroboros_test::read_bytes(out / "config.json"), before);
  r = cli("export --checkpoint " + ckpt.string() + " --out " + out.string() + " --overwrite");
  EXPECT_EQ(r.code, 0) << r.output;
  r = cli("export --checkpoint " + ckpt.string() + " --format onnx --out " +
          (dir.path() / "x").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.output, "error: export: unknown --format 'onnx' (hint: use --format hf or torch)\n");
}

TEST(Export, TransformerXLHasNoGpt2Form) {
  TempDir dir;
  const fs::path corpus = dir.write("c.txt", ouroboros_test::tiny_corpus(3000));
  const fs::path out = dir.path() / "xl";
  CliRun r = cli(ouroboros_test::train_flags({{"--data", corpus.string()},
                                              {"--model", "transformer-xl"},
                                              {"--mem-len", "8"},
                                              {"--steps", "2"},
                                              {"--out-dir", out.string()}}));
  ASSERT_EQ(r.code, 0) << r.output;
  r = cli("export --checkpoint " + (out / "ckpt.pt").string() + " --out " +
          (dir.path() / "hf").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.output,
            "error: export --format hf: a transformer-xl model has no GPT-2 form "
            "(hint: export a checkpoint of --model gpt)\n");
  EXPECT_FALSE(fs::exists(dir.path() / "hf"));
}

std::string hex(const std::string& bytes) {
  std::ostringstream s;
  for (unsigned char c : bytes) s << std::hex << (c < 16 ? "0" : "") << static_cast<int>(c);
  return s.str();
}

TEST(Export, TransformersGivesTheSameLogitsAndText) {
  const std::string py = ouroboros_test::python_with("transformers");
  if (py.empty()) {
    GTEST_SKIP() << "no Python with transformers (scripts/python-env.sh installs it into .venv)";
  }
  TempDir dir;
  const std::string text = ouroboros_test::tiny_corpus(3000) + "caf\xc3\xa9 na\xc3\xafve\n";
  for (const std::string kind : {"byte", "char", "word", "gpt2"}) {
    SCOPED_TRACE(kind);
    const fs::path ckpt = train_tiny(dir, kind, text);
    const fs::path out = dir.path() / ("hf-" + kind);
    CliRun r = cli("export --checkpoint " + ckpt.string() + " --out " + out.string());
    ASSERT_EQ(r.code, 0) << r.output;
    const Checkpoint ck = load_checkpoint(ckpt.string());
    GPT model(ck.config.model);
    const std::string probe = kind == "word"   ? "the cat sat on a mat .\nmy dog ran\n"
                              : kind == "gpt2" ? "the cat sat.<|endoftext|> caf\xc3\xa9\n"
                                               : "the cat sat on the mat. caf\xc3\xa9\n";
    std::vector<int32_t> ids = ck.tokenizer.encode(probe);
    ids.resize(std::min<size_t>(ids.size(), static_cast<size_t>(ck.config.model.block_size)));
    Tensor x = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end())).view({1, -1});
    x = torch::cat({x, x.flip(1)});  // two sequences
    ForwardContext ctx;
    Tensor logits;
    {
      torch::NoGradGuard no_grad;
      logits = model.output_logits(ck.model, x, ctx);
    }
    c10::impl::GenericDict ref(c10::StringType::get(), c10::AnyType::get());
    ref.insert("ids", x);
    ref.insert("logits", logits);
    ref.insert("sample_ids", x[0].clone());
    Tensor bytes = torch::empty({static_cast<int64_t>(probe.size())}, torch::kUInt8);
    std::memcpy(bytes.data_ptr(), probe.data(), probe.size());
    ref.insert("text", bytes);
    const std::vector<char> pickled = torch::pickle_save(c10::IValue(ref));
    const fs::path ref_file = dir.path() / ("ref-" + kind + ".pt");
    std::ofstream(ref_file, std::ios::binary)
        .write(pickled.data(), static_cast<std::streamsize>(pickled.size()));

    auto [output, rc] = run_command(py + " " + OUROBOROS_SOURCE_DIR "/tests/tools/hf_compare.py " +
                                    out.string() + " " + ref_file.string() + " 2>&1");
    ASSERT_EQ(rc, 0) << output;
    const nlohmann::json j = nlohmann::json::parse(output.substr(output.rfind('{')));
    EXPECT_LT(j["rel"].get<double>(), 1e-5);
    EXPECT_TRUE(j["tied"].get<bool>());
    std::string ours = ck.tokenizer.decode(std::vector<int32_t>(ids.begin(), ids.end()));
    std::string theirs;
    const std::string h = j["decoded"].get<std::string>();
    for (size_t i = 0; i + 1 < h.size(); i += 2)
      theirs += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
    if (kind == "word") {  // its decoder puts a space after a line end
      for (size_t at; (at = theirs.find("\n ")) != std::string::npos;) theirs.erase(at + 1, 1);
    }
    EXPECT_EQ(hex(theirs), hex(ours));
    EXPECT_EQ(j["ids"].get<std::vector<int32_t>>(), ck.tokenizer.encode(probe));
  }
}

}  // namespace
}  // namespace ouroboros
