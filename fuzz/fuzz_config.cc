// config.json parsing (server/store/config.h): the one file of a container
// read before anything else, possibly hand-edited or written by another
// tool. Checks, for any input:
//   - a rejected config is INVALID_ARGUMENT, never a crash;
//   - an accepted config holds values in range (version 1, loose_prefix_len
//     below the key length, a positive pack_size_target, a codec whose name
//     parses back to it);
//   - it round-trips: SerializeConfigJson of it parses back to the same
//     config, and serializing that gives the same text again.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "common/str_cat.h"
#include "fuzz/fuzz_check.h"
#include "server/store/config.h"

namespace packstore::fuzz {
namespace {

bool SameConfig(const ContainerConfig& a, const ContainerConfig& b) {
  return a.container_version == b.container_version && a.loose_prefix_len == b.loose_prefix_len &&
         a.pack_size_target == b.pack_size_target && a.hash_type == b.hash_type &&
         a.container_id == b.container_id && a.codec == b.codec;
}

}  // namespace
}  // namespace packstore::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace packstore;
  using namespace packstore::fuzz;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<ContainerConfig> config = ParseConfigJson(text);
  if (!config.ok()) {
    FUZZ_CHECK(config.status().code() == absl::StatusCode::kInvalidArgument,
               config.status().ToString());
    FUZZ_CHECK(!config.status().message().empty(), "an error without a message");
    return 0;
  }
  FUZZ_CHECK(config->container_version == 1, StrCat(config->container_version));
  FUZZ_CHECK(config->loose_prefix_len >= 0 &&
                 static_cast<size_t>(config->loose_prefix_len) < HexKeyLength(config->hash_type),
             StrCat(config->loose_prefix_len));
  FUZZ_CHECK(config->pack_size_target > 0, StrCat(config->pack_size_target));
  const absl::StatusOr<Codec> codec = ParseCodec(CodecName(config->codec));
  FUZZ_CHECK(codec.ok() && *codec == config->codec, CodecName(config->codec));

  const std::string serialized = SerializeConfigJson(*config);
  const absl::StatusOr<ContainerConfig> reparsed = ParseConfigJson(serialized);
  FUZZ_CHECK(reparsed.ok(), StrCat("the serialized config does not parse: ",
                                   reparsed.status().ToString(), "\n", serialized));
  FUZZ_CHECK(SameConfig(*config, *reparsed),
             StrCat("the serialized config parses to another config:\n", serialized));
  FUZZ_CHECK(SerializeConfigJson(*reparsed) == serialized,
             StrCat("serializing is not a fixed point:\n", serialized, "\n",
                    SerializeConfigJson(*reparsed)));
  return 0;
}
