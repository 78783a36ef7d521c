// Config fields as command-line flags (see flags.h).
#include "cli/flags.h"

#include <algorithm>
#include <exception>

#include <nlohmann/json.hpp>

#include "ouroboros/core/presets.h"

namespace ouroboros {

CLI::Validator at_least(int64_t low) {
  return CLI::Validator(
      [low](std::string& v) -> std::string {
        try {
          size_t used = 0;
          const long long x = std::stoll(v, &used);
          if (used == v.size() && x >= low) return "";
        } catch (const std::exception&) {
        }
        return "must be an integer >= " + std::to_string(low) + ", got " + v;
      },
      ">= " + std::to_string(low));
}

CLI::Validator positive(bool zero_allowed) {
  return CLI::Validator(
      [zero_allowed](std::string& v) -> std::string {
        try {
          size_t used = 0;
          const double x = std::stod(v, &used);
          if (used == v.size() && (x > 0 || (zero_allowed && x == 0))) return "";
        } catch (const std::exception&) {
        }
        return std::string("must be a number ") + (zero_allowed ? ">= 0" : "> 0") + ", got " + v;
      },
      zero_allowed ? ">= 0" : "> 0");
}

void ConfigFlags::add_to(CLI::App& app, const std::vector<std::string>& sections,
                         const std::string& defaults_note, const Config& defaults,
                         const std::vector<std::string>& exclude) {
  app.add_option("--config", config_file, "JSON config file; flags override it");
  nlohmann::json d = defaults.to_json();
  for (const auto& f : config_fields()) {
    const std::string section = f.key.substr(0, f.key.find('.'));
    if (std::find(sections.begin(), sections.end(), section) == sections.end()) continue;
    if (std::find(exclude.begin(), exclude.end(), f.key) != exclude.end()) continue;
    const nlohmann::json& def = d[section][f.key.substr(f.key.find('.') + 1)];
    std::string shown = def.is_string() ? def.get<std::string>() : def.dump();
    if (!defaults_note.empty()) shown = defaults_note;
    const char* type = def.is_string() ? "TEXT" : def.is_number_integer() ? "INT" : "FLOAT";
    options[f.key] =
        app.add_option(f.flag, values[f.key], f.help + " [" + shown + "]")->type_name(type);
  }
}

void ConfigFlags::add_presets_to(CLI::App& app) {
  app.add_option(
      "--preset", preset,
      "named configuration: " + preset_list() + " (a config file and flags override it)");
  std::string footer = "Presets:";
  for (const auto& p : presets()) footer += "\n  " + p.name + ": " + p.description;
  app.footer(footer);
}

Config ConfigFlags::apply(Config base) const {
  if (!preset.empty()) apply_preset(preset, base);
  if (!config_file.empty()) base.merge_json(read_config_json(config_file));
  for (const auto& [key, opt] : options) {
    if (opt->count() > 0) base.set_from_string(key, values.at(key));
  }
  return base;
}

Config ConfigFlags::apply_to_resumed(Config checkpoint) const {
  // Resetting the checkpoint's value under the flags leaves whatever the user gave in place.
  const EngineConfig d;
  if (resolved_mode(apply(checkpoint).engine) != Mode::kOuroboros) {
    checkpoint.engine.weight_predict = d.weight_predict;
    checkpoint.engine.stale_lr = d.stale_lr;
    checkpoint.engine.stale_lr_ticks = d.stale_lr_ticks;
    checkpoint.engine.sync_warmup = d.sync_warmup;
  }
  if (!predicts_weights(apply(checkpoint).engine))
    checkpoint.engine.predict_scale = d.predict_scale;
  return apply(checkpoint);
}

}  // namespace ouroboros
