// The command line's side of the configuration: every config field as a flag, applied over a base
// (the defaults or a checkpoint's), and the number checks CLI11 says in its own words.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ouroboros/core/config.h"

namespace ouroboros {

// An integer flag of at least `low`, with a message that says so (CLI11's ranges print the
// type's limits).
CLI::Validator at_least(int64_t low);

// A number flag above zero (or at least zero), said in those words.
CLI::Validator positive(bool zero_allowed = false);

// Every config field as a flag; values stay text until applied through the field table.
struct ConfigFlags {
  std::string preset;
  std::string config_file;
  std::map<std::string, std::string> values;  // key -> text
  std::map<std::string, CLI::Option*> options;

  // Adds --config and a flag for each field of `sections` but those in `exclude`. defaults_note:
  // what an absent flag means, when not the built-in default (e.g. "the checkpoint's").
  void add_to(CLI::App& app, const std::vector<std::string>& sections,
              const std::string& defaults_note = "", const Config& defaults = Config{},
              const std::vector<std::string>& exclude = {});
  // Adds --preset and lists the presets below the subcommand's help.
  void add_presets_to(CLI::App& app);
  // base <- preset <- config file <- flags given on the command line.
  Config apply(Config base) const;
  // The configuration of a run resumed from a checkpoint's: as apply(), except that the
  // checkpoint's options for delayed gradients revert to their defaults when the run continues
  // without delays (as plain backprop, say), and its prediction horizon when it continues without
  // prediction: they have nothing to act on. Given again here or in --config, they are checked
  // (and refused) as usual.
  Config apply_to_resumed(Config checkpoint) const;
};

}  // namespace ouroboros
