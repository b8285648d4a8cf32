// Compression codecs for packed objects.
//
// A container compresses with one algorithm (config.json
// "compression_algorithm"): "zlib+1" .. "zlib+9" (RFC 1950 zlib streams, what
// disk-objectstore reads) or, as an explicit opt-in, "zstd+1" .. "zstd+19"
// (zstd frames; disk-objectstore cannot read such a container).
// Decompression does not depend on the level.
//
// Compressor and Decompressor stream in bounded memory: the caller feeds
// input in chunks and pulls output into its own buffer, so a small
// compressed input can never make a huge allocation (no zip bombs).
//
// Thread-safety: a Compressor/Decompressor is used by one thread at a time;
// free functions are thread-safe.
//
//   auto c = Compressor::Create(codec);           // StatusOr
//   std::string out;
//   (*c)->Compress(chunk, &out); ... (*c)->Finish(&out);
#ifndef PACKSTORE_COMMON_CODEC_H_
#define PACKSTORE_COMMON_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace packstore {

enum class CodecKind { kZlib, kZstd };

struct Codec {
  CodecKind kind = CodecKind::kZlib;
  int level = 1;
  bool operator==(const Codec&) const = default;
};

// Parses "zlib+N" (N in 1..9) or "zstd+N" (N in 1..19). INVALID_ARGUMENT,
// naming the accepted values, for anything else.
absl::StatusOr<Codec> ParseCodec(std::string_view name);

// "zlib+1", "zstd+3", ...
std::string CodecName(Codec codec);

// True for the zlib codecs, the only ones disk-objectstore can read.
inline bool IsDiskObjectstoreCompatible(Codec codec) { return codec.kind == CodecKind::kZlib; }

class Compressor {
 public:
  // INVALID_ARGUMENT for a level ParseCodec would reject; INTERNAL if the
  // library cannot set up a stream.
  static absl::StatusOr<std::unique_ptr<Compressor>> Create(Codec codec);
  virtual ~Compressor() = default;

  // Appends the compressed form of `input` (possibly nothing yet) to `out`.
  virtual absl::Status Compress(std::string_view input, std::string* out) = 0;
  // Ends the stream, appending what remains. The compressor may not be used
  // afterwards (FAILED_PRECONDITION if it is).
  virtual absl::Status Finish(std::string* out) = 0;
};

class Decompressor {
 public:
  static absl::StatusOr<std::unique_ptr<Decompressor>> Create(CodecKind kind);
  virtual ~Decompressor() = default;

  // Supplies the next compressed bytes. REQUIRES: NeedsInput(). The bytes
  // must stay valid until NeedsInput() is true again. Bytes fed after the
  // stream has ended make the next Produce fail with DATA_LOSS.
  virtual void Feed(std::string_view input) = 0;
  // Writes up to `capacity` decompressed bytes to `out` and returns how many.
  // Returns 0 when it needs more input or the stream has ended.
  // DATA_LOSS when the compressed bytes are corrupt or continue past the end
  // of the stream; the error then sticks to every later call.
  virtual absl::StatusOr<size_t> Produce(char* out, size_t capacity) = 0;
  // True when all fed input has been consumed and more is needed.
  virtual bool NeedsInput() const = 0;
  // True once the end of the compressed stream was decoded.
  virtual bool Finished() const = 0;
};

// One-shot helpers.
absl::StatusOr<std::string> CompressAll(Codec codec, std::string_view input);
// DATA_LOSS if the input is corrupt, truncated, has trailing bytes, or does
// not decompress to exactly `expected_size` bytes.
absl::StatusOr<std::string> DecompressAll(CodecKind kind, std::string_view input,
                                          size_t expected_size);

// disk-objectstore's AUTO heuristic, applied to a sample of an object
// (about 128 KiB of 1 KiB pieces spread across it; see SampleOffsets):
// compress when zlib level 1 shrinks the sample below 0.9 of its size.
bool SampleIsCompressible(std::string_view sample);

inline constexpr size_t kSamplePieceSize = 1024;
inline constexpr size_t kSamplePieces = 128;

// Offsets of the kSamplePieceSize pieces that make up the AUTO sample of an
// object of `size` bytes: {0} when size <= kSamplePieces * kSamplePieceSize
// (the sample is then the whole object), else kSamplePieces offsets evenly
// spread so that the first piece starts at 0 and the last ends at `size`.
std::vector<uint64_t> SampleOffsets(uint64_t size);

}  // namespace packstore

#endif  // PACKSTORE_COMMON_CODEC_H_
