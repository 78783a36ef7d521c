// Helpers of the data-layer tests.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "ouroboros/core/errors.h"

namespace ouroboros_test {

// Runs f, expects a DataError, and returns its message.
template <typename F>
std::string data_error_message(F&& f) {
  try {
    f();
  } catch (const ouroboros::DataError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a DataError";
  return "";
}

}  // namespace ouroboros_test
