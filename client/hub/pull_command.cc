#include "client/hub/pull_command.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <ostream>
#include <string>

#include "client/command_status.h"
#include "client/hub/hub_download.h"

namespace lensgrid {

int RunPullCommand(int argc, char** argv, std::ostream& out, std::ostream& err) {
  CLI::App app{"Download a model from the Hugging Face Hub into its cache", "lensgrid pull"};
  std::string name, revision, cache_dir;
  bool quiet = false, if_missing = false;
  app.add_option("model", name, "gpt2 | gpt2-medium | gpt2-large | gpt2-xl | ORG/NAME[@REV]")
      ->required();
  app.add_option("--revision", revision, "branch, tag or commit (default: main)");
  app.add_option("--cache-dir", cache_dir,
                 "cache root (default: $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub)");
  app.add_flag("--quiet", quiet, "no progress");
  app.add_flag("--if-missing", if_missing,
               "do nothing (no network) when the cache already holds the model at this "
               "revision (init containers)");
  app.footer(
      "Environment: HF_ENDPOINT (default https://huggingface.co; any server with the Hub's URL\n"
      "layout), HF_TOKEN (private or gated repos; sent only to HF_ENDPOINT's host), HF_HOME,\n"
      "HF_HUB_CACHE. The cache is huggingface_hub's: models--ORG--NAME/{blobs,snapshots/COMMIT,\n"
      "refs/REV}; files transformers downloaded are found there too. Without a network, copy\n"
      "that dir from a machine that has it, or copy the files into a dir and pass --model DIR.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, out, err);
  }
  absl::StatusOr<hub::ModelRef> ref = hub::ParseModelName(name, revision);
  if (!ref.ok()) return ReportCommandStatus("pull", ref.status(), err);
  hub::HubSettings settings = hub::SettingsFromEnvironment();
  if (!cache_dir.empty()) settings.cache_dir = cache_dir;
  if (if_missing) {
    absl::StatusOr<std::string> cached = hub::FindCachedModel(*ref, settings.cache_dir);
    if (cached.ok()) {
      if (!quiet) err << ref->repo_id << "@" << ref->revision << ": in the cache, not pulled\n";
      out << *cached << "\n";
      return 0;
    }
  }
  std::unique_ptr<hub::HttpClient> http = hub::NewCurlHttpClient();
  hub::PullOptions options{settings, http.get(), quiet ? nullptr : &err, ::isatty(2) != 0};
  absl::StatusOr<hub::PulledModel> pulled = hub::PullModel(*ref, options);
  if (!pulled.ok()) {
    absl::Status s = pulled.status();
    if (absl::IsUnavailable(s)) {
      s = absl::Status(
          s.code(),
          absl::StrCat(s.message(),
                       "\nhint: offline or the Hub unreachable? Set HF_ENDPOINT to a mirror, or "
                       "copy ",
                       hub::RepoCacheDir(settings.cache_dir, ref->repo_id),
                       " from a machine that has it, or pass --model DIR with config.json and "
                       "model.safetensors"));
    }
    return ReportCommandStatus("pull", s, err);
  }
  if (!quiet) {
    err << ref->repo_id << "@" << ref->revision << " = commit " << pulled->commit << ": "
        << pulled->files.size() << " files, " << pulled->bytes_downloaded << " bytes downloaded\n";
  }
  out << pulled->dir << "\n";
  return 0;
}

}  // namespace lensgrid
