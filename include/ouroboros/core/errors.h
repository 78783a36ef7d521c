// Exceptions the library throws. Each carries what went wrong (with the offending value) and how
// to fix it, so the CLI can print exactly one line and exit non-zero. The library never exits.
#pragma once

#include <stdexcept>
#include <string>

namespace ouroboros {

class Error : public std::runtime_error {
 public:
  Error(const std::string& what, const std::string& hint = "")
      : std::runtime_error(hint.empty() ? what : what + " (hint: " + hint + ")") {}
};

// A configuration value is unknown, of the wrong type, or impossible.
class ConfigError : public Error {
  using Error::Error;
};
// A corpus is missing, empty, or too short.
class DataError : public Error {
  using Error::Error;
};
// A checkpoint is unreadable or does not match the run.
class CheckpointError : public Error {
  using Error::Error;
};
// A partition or schedule cannot be built or is invalid.
class PlanError : public Error {
  using Error::Error;
};
// A peer stopped answering or a message could not be delivered.
class TransportError : public Error {
  using Error::Error;
};
// A loss or gradient is not finite (inf or nan): the run diverged or its data is broken.
class NumericError : public Error {
  using Error::Error;
};

}  // namespace ouroboros
