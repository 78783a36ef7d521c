// The interface between the data layer (subword.cpp) and the sentencepiece module
// (subword_module.cpp), a shared object the data layer loads at run time. The module is built by
// the same build with the same compiler, so the interface may pass standard C++ types.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ouroboros::detail {

// Raised whenever a function of SubwordApi changes, so a stale module is refused, not called.
constexpr int kSubwordAbiVersion = 1;

// Piece types, as SentencePieceProcessor reports them.
enum SubwordPieceType : int8_t {
  kPieceNormal = 0,
  kPieceUnknown = 1,
  kPieceControl = 2,
  kPieceByte = 3
};

struct SubwordApi {
  int abi_version;
  // Trains a model of `model_type` ("bpe" | "unigram") with vocab_size pieces on the sentences.
  // Returns "" and sets *proto to the serialized ModelProto, or returns sentencepiece's error.
  std::string (*train)(const std::string& model_type, int32_t vocab_size,
                       const std::vector<std::string_view>& sentences, std::string* proto);
  // A processor for a serialized model (release it with release), or nullptr with *error set.
  void* (*load)(const std::string& proto, std::string* error);
  void (*release)(void* model);
  // Every piece by id and its type.
  void (*pieces)(const void* model, std::vector<std::string>* pieces, std::vector<int8_t>* types);
  // Appends the ids of text to *ids; returns "" or sentencepiece's error.
  std::string (*encode)(const void* model, std::string_view text, std::vector<int32_t>* ids);
};

}  // namespace ouroboros::detail

// The module's one entry point, found with dlsym.
extern "C" const ouroboros::detail::SubwordApi* ouroboros_subword_api();
