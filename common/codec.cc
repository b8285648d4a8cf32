// Compression codecs for packed objects: zlib (RFC 1950) and zstd streams.
#include "common/codec.h"

#define ZLIB_CONST
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <climits>
#include <utility>

#include "absl/strings/escaping.h"
#include "common/status_util.h"
#include "common/str_cat.h"

namespace packstore {
namespace {

constexpr int kZlibMaxLevel = 9;
constexpr int kZstdMaxLevel = 19;

// Output is produced in pieces of this size, so a compressor holds a fixed
// buffer however large the object is.
constexpr size_t kOutputChunk = 64 * 1024;

// zstd levels 1..19 never pick a window above 2^23 (8 MiB). Without a limit a
// corrupt or hostile frame could make the decoder allocate up to 128 MiB.
constexpr int kZstdWindowLogMax = 23;

// zlib counts bytes in uInt; longer buffers are handed over in pieces.
constexpr size_t kZlibMaxPiece = UINT_MAX;

const char* KindName(CodecKind kind) { return kind == CodecKind::kZlib ? "zlib" : "zstd"; }

int MaxLevel(CodecKind kind) { return kind == CodecKind::kZlib ? kZlibMaxLevel : kZstdMaxLevel; }

absl::Status CheckLevel(Codec codec) {
  if (codec.level >= 1 && codec.level <= MaxLevel(codec.kind)) return absl::OkStatus();
  return absl::InvalidArgumentError(StrCat(KindName(codec.kind), " level ", codec.level,
                                           " out of range 1..", MaxLevel(codec.kind)));
}

// Accepts only the canonical spelling ("7", not "07" or "+7"), so that a
// config.json value round-trips through CodecName unchanged.
bool ParseLevel(std::string_view digits, int max_level, int* level) {
  if (digits.empty() || digits.size() > 2 || digits[0] == '0') return false;
  int value = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  if (value > max_level) return false;
  *level = value;
  return true;
}

class ZlibCompressor final : public Compressor {
 public:
  ZlibCompressor() = default;
  ZlibCompressor(const ZlibCompressor&) = delete;
  ZlibCompressor& operator=(const ZlibCompressor&) = delete;
  ~ZlibCompressor() override {
    if (initialized_) deflateEnd(&stream_);
  }

  absl::Status Init(int level) {
    // deflateInit, not deflateInit2 with other window bits: it writes the
    // RFC 1950 wrapper (78 01 for level 1) that disk-objectstore expects.
    if (deflateInit(&stream_, level) != Z_OK) {
      return absl::InternalError(StrCat("deflateInit failed at level ", level));
    }
    initialized_ = true;
    return absl::OkStatus();
  }

  absl::Status Compress(std::string_view input, std::string* out) override {
    if (input.empty()) return Usable();
    return Deflate(input, Z_NO_FLUSH, out);
  }

  absl::Status Finish(std::string* out) override {
    PACKSTORE_RETURN_IF_ERROR(Deflate({}, Z_FINISH, out));
    finished_ = true;
    return absl::OkStatus();
  }

 private:
  absl::Status Usable() const {
    if (finished_) return absl::FailedPreconditionError("zlib compressor used after Finish");
    return absl::OkStatus();
  }

  absl::Status Deflate(std::string_view input, int flush, std::string* out) {
    PACKSTORE_RETURN_IF_ERROR(Usable());
    do {
      const size_t piece = std::min(input.size(), kZlibMaxPiece);
      stream_.next_in = reinterpret_cast<const Bytef*>(input.data());
      stream_.avail_in = static_cast<uInt>(piece);
      input.remove_prefix(piece);
      const int piece_flush = input.empty() ? flush : Z_NO_FLUSH;
      // deflate leaves output space unused only once it has taken all the
      // input and, under Z_FINISH, written the end of the stream.
      do {
        stream_.next_out = reinterpret_cast<Bytef*>(buffer_);
        stream_.avail_out = static_cast<uInt>(kOutputChunk);
        if (deflate(&stream_, piece_flush) == Z_STREAM_ERROR) {
          return absl::InternalError("deflate: inconsistent stream state");
        }
        out->append(buffer_, kOutputChunk - stream_.avail_out);
      } while (stream_.avail_out == 0);
    } while (!input.empty());
    return absl::OkStatus();
  }

  z_stream stream_{};
  bool initialized_ = false;
  bool finished_ = false;
  char buffer_[kOutputChunk];
};

class ZstdCompressor final : public Compressor {
 public:
  ZstdCompressor() = default;
  ZstdCompressor(const ZstdCompressor&) = delete;
  ZstdCompressor& operator=(const ZstdCompressor&) = delete;
  ~ZstdCompressor() override { ZSTD_freeCStream(stream_); }

  absl::Status Init(int level) {
    stream_ = ZSTD_createCStream();
    if (stream_ == nullptr) return absl::InternalError("ZSTD_createCStream failed");
    PACKSTORE_RETURN_IF_ERROR(SetParameter(ZSTD_c_compressionLevel, level));
    // zlib streams end with an Adler-32; the checksum gives zstd frames the
    // same guard, so corruption shows up as DATA_LOSS when reading.
    return SetParameter(ZSTD_c_checksumFlag, 1);
  }

  absl::Status Compress(std::string_view input, std::string* out) override {
    if (input.empty()) return Usable();
    return Stream(input, ZSTD_e_continue, out);
  }

  absl::Status Finish(std::string* out) override {
    PACKSTORE_RETURN_IF_ERROR(Stream({}, ZSTD_e_end, out));
    finished_ = true;
    return absl::OkStatus();
  }

 private:
  absl::Status Usable() const {
    if (finished_) return absl::FailedPreconditionError("zstd compressor used after Finish");
    return absl::OkStatus();
  }

  absl::Status SetParameter(ZSTD_cParameter parameter, int value) {
    const size_t rc = ZSTD_CCtx_setParameter(stream_, parameter, value);
    if (ZSTD_isError(rc)) {
      return absl::InternalError(StrCat("ZSTD_CCtx_setParameter: ", ZSTD_getErrorName(rc)));
    }
    return absl::OkStatus();
  }

  absl::Status Stream(std::string_view input, ZSTD_EndDirective mode, std::string* out) {
    PACKSTORE_RETURN_IF_ERROR(Usable());
    ZSTD_inBuffer in{input.data(), input.size(), 0};
    while (true) {
      ZSTD_outBuffer piece{buffer_, kOutputChunk, 0};
      const size_t remaining = ZSTD_compressStream2(stream_, &piece, &in, mode);
      if (ZSTD_isError(remaining)) {
        return absl::InternalError(StrCat("ZSTD_compressStream2: ", ZSTD_getErrorName(remaining)));
      }
      out->append(buffer_, piece.pos);
      // ZSTD_e_end is done once nothing is left to flush; ZSTD_e_continue
      // once the input is taken (the rest stays buffered for later calls).
      if (mode == ZSTD_e_end ? remaining == 0 : in.pos == in.size) break;
    }
    return absl::OkStatus();
  }

  ZSTD_CStream* stream_ = nullptr;
  bool finished_ = false;
  char buffer_[kOutputChunk];
};

// What one call into a decoding library did.
struct DecodeStep {
  size_t consumed = 0;
  size_t produced = 0;
  // All the output space offered was used, so the decoder may hold more.
  bool filled = false;
  bool ended = false;
};

// The Feed/Produce bookkeeping shared by both codecs; a subclass supplies
// one decoding call.
class StreamDecompressor : public Decompressor {
 public:
  void Feed(std::string_view input) final {
    if (input.empty() || !status_.ok()) return;
    if (finished_) {
      status_ = absl::DataLossError(
          StrCat(KindName(kind_), ": bytes after the end of the compressed stream"));
    } else if (!input_.empty() || output_pending_) {
      status_ = absl::FailedPreconditionError("Decompressor::Feed before NeedsInput()");
    } else {
      input_ = input;
    }
  }

  absl::StatusOr<size_t> Produce(char* out, size_t capacity) final {
    if (!status_.ok()) return status_;
    size_t produced = 0;
    while (!finished_ && produced < capacity) {
      DecodeStep step;
      status_ = Decode(input_, out + produced, capacity - produced, &step);
      if (!status_.ok()) return status_;
      input_.remove_prefix(step.consumed);
      produced += step.produced;
      output_pending_ = step.filled;
      if (step.ended) {
        finished_ = true;
        output_pending_ = false;
        if (!input_.empty()) {
          status_ = absl::DataLossError(StrCat(KindName(kind_), ": ", input_.size(),
                                               " bytes after the end of the compressed stream"));
          return status_;
        }
      } else if (!step.filled) {
        // Output space left over means the decoder has given all it can
        // from the input it holds.
        if (input_.empty()) break;
        // Both libraries promise progress when given input and space; if one
        // ever did not, callers would spin on 0 without NeedsInput().
        if (step.consumed == 0 && step.produced == 0) {
          status_ = absl::InternalError(StrCat(KindName(kind_), ": decoder made no progress"));
          return status_;
        }
      }
    }
    return produced;
  }

  bool NeedsInput() const final {
    return status_.ok() && !finished_ && input_.empty() && !output_pending_;
  }

  bool Finished() const final { return finished_; }

 protected:
  explicit StreamDecompressor(CodecKind kind) : kind_(kind) {}

  // Decodes from `input` into out[0, capacity) and reports what happened.
  // DATA_LOSS for corrupt input.
  virtual absl::Status Decode(std::string_view input, char* out, size_t capacity,
                              DecodeStep* step) = 0;

 private:
  const CodecKind kind_;
  std::string_view input_;
  bool output_pending_ = false;
  bool finished_ = false;
  absl::Status status_;
};

class ZlibDecompressor final : public StreamDecompressor {
 public:
  ZlibDecompressor() : StreamDecompressor(CodecKind::kZlib) {}
  ZlibDecompressor(const ZlibDecompressor&) = delete;
  ZlibDecompressor& operator=(const ZlibDecompressor&) = delete;
  ~ZlibDecompressor() override {
    if (initialized_) inflateEnd(&stream_);
  }

  absl::Status Init() {
    // inflateInit accepts only the zlib wrapper: a raw deflate or gzip
    // stream is rejected as corrupt rather than silently read.
    if (inflateInit(&stream_) != Z_OK) return absl::InternalError("inflateInit failed");
    initialized_ = true;
    return absl::OkStatus();
  }

 private:
  absl::Status Decode(std::string_view input, char* out, size_t capacity,
                      DecodeStep* step) override {
    const uInt in_size = static_cast<uInt>(std::min(input.size(), kZlibMaxPiece));
    const uInt out_size = static_cast<uInt>(std::min(capacity, kZlibMaxPiece));
    stream_.next_in = reinterpret_cast<const Bytef*>(input.data());
    stream_.avail_in = in_size;
    stream_.next_out = reinterpret_cast<Bytef*>(out);
    stream_.avail_out = out_size;
    const int rc = inflate(&stream_, Z_NO_FLUSH);
    step->consumed = in_size - stream_.avail_in;
    step->produced = out_size - stream_.avail_out;
    step->filled = stream_.avail_out == 0;
    switch (rc) {
      case Z_OK:
      case Z_BUF_ERROR:  // No progress possible; not an error for inflate.
        return absl::OkStatus();
      case Z_STREAM_END:
        step->ended = true;
        return absl::OkStatus();
      case Z_NEED_DICT:
        return absl::DataLossError("zlib: stream asks for a preset dictionary");
      case Z_DATA_ERROR:
        return absl::DataLossError(
            StrCat("zlib: ", stream_.msg != nullptr ? stream_.msg : "corrupt stream"));
      case Z_MEM_ERROR:
        return absl::ResourceExhaustedError("zlib: out of memory");
      default:
        return absl::InternalError(StrCat("inflate returned ", rc));
    }
  }

  z_stream stream_{};
  bool initialized_ = false;
};

class ZstdDecompressor final : public StreamDecompressor {
 public:
  ZstdDecompressor() : StreamDecompressor(CodecKind::kZstd) {}
  ZstdDecompressor(const ZstdDecompressor&) = delete;
  ZstdDecompressor& operator=(const ZstdDecompressor&) = delete;
  ~ZstdDecompressor() override { ZSTD_freeDStream(stream_); }

  absl::Status Init() {
    stream_ = ZSTD_createDStream();
    if (stream_ == nullptr) return absl::InternalError("ZSTD_createDStream failed");
    const size_t rc = ZSTD_DCtx_setParameter(stream_, ZSTD_d_windowLogMax, kZstdWindowLogMax);
    if (ZSTD_isError(rc)) {
      return absl::InternalError(StrCat("ZSTD_DCtx_setParameter: ", ZSTD_getErrorName(rc)));
    }
    return absl::OkStatus();
  }

 private:
  absl::Status Decode(std::string_view input, char* out, size_t capacity,
                      DecodeStep* step) override {
    ZSTD_inBuffer in{input.data(), input.size(), 0};
    ZSTD_outBuffer output{out, capacity, 0};
    const size_t rc = ZSTD_decompressStream(stream_, &output, &in);
    if (ZSTD_isError(rc)) {
      if (ZSTD_getErrorCode(rc) == ZSTD_error_memory_allocation) {
        return absl::ResourceExhaustedError("zstd: out of memory");
      }
      return absl::DataLossError(StrCat("zstd: ", ZSTD_getErrorName(rc)));
    }
    step->consumed = in.pos;
    step->produced = output.pos;
    step->filled = output.pos == output.size;
    // 0 means the frame is decoded and flushed. Only one frame is written
    // per object, so anything after it is treated as trailing bytes.
    step->ended = rc == 0;
    return absl::OkStatus();
  }

  ZSTD_DStream* stream_ = nullptr;
};

}  // namespace

absl::StatusOr<Codec> ParseCodec(std::string_view name) {
  for (CodecKind kind : {CodecKind::kZlib, CodecKind::kZstd}) {
    const std::string prefix = StrCat(KindName(kind), "+");
    Codec codec{kind, 0};
    if (name.starts_with(prefix) &&
        ParseLevel(name.substr(prefix.size()), MaxLevel(kind), &codec.level)) {
      return codec;
    }
  }
  const std::string_view quoted = name.substr(0, 40);
  return absl::InvalidArgumentError(StrCat(
      "unknown compression \"", absl::CHexEscape(absl::string_view(quoted.data(), quoted.size())),
      "\"; expected zlib+1 .. zlib+", kZlibMaxLevel, " or zstd+1 .. zstd+", kZstdMaxLevel));
}

std::string CodecName(Codec codec) { return StrCat(KindName(codec.kind), "+", codec.level); }

absl::StatusOr<std::unique_ptr<Compressor>> Compressor::Create(Codec codec) {
  PACKSTORE_RETURN_IF_ERROR(CheckLevel(codec));
  if (codec.kind == CodecKind::kZlib) {
    auto compressor = std::make_unique<ZlibCompressor>();
    PACKSTORE_RETURN_IF_ERROR(compressor->Init(codec.level));
    return compressor;
  }
  auto compressor = std::make_unique<ZstdCompressor>();
  PACKSTORE_RETURN_IF_ERROR(compressor->Init(codec.level));
  return compressor;
}

absl::StatusOr<std::unique_ptr<Decompressor>> Decompressor::Create(CodecKind kind) {
  if (kind == CodecKind::kZlib) {
    auto decompressor = std::make_unique<ZlibDecompressor>();
    PACKSTORE_RETURN_IF_ERROR(decompressor->Init());
    return decompressor;
  }
  auto decompressor = std::make_unique<ZstdDecompressor>();
  PACKSTORE_RETURN_IF_ERROR(decompressor->Init());
  return decompressor;
}

absl::StatusOr<std::string> CompressAll(Codec codec, std::string_view input) {
  PACKSTORE_ASSIGN_OR_RETURN(std::unique_ptr<Compressor> compressor, Compressor::Create(codec));
  std::string out;
  PACKSTORE_RETURN_IF_ERROR(compressor->Compress(input, &out));
  PACKSTORE_RETURN_IF_ERROR(compressor->Finish(&out));
  return out;
}

absl::StatusOr<std::string> DecompressAll(CodecKind kind, std::string_view input,
                                          size_t expected_size) {
  PACKSTORE_ASSIGN_OR_RETURN(std::unique_ptr<Decompressor> decompressor,
                             Decompressor::Create(kind));
  decompressor->Feed(input);
  // The buffer grows with what is actually decoded rather than being sized
  // from `expected_size` up front, so a wrong size from a damaged index
  // cannot force a huge allocation.
  std::string out;
  size_t total = 0;
  while (total < expected_size) {
    if (total == out.size()) {
      out.resize(std::min(expected_size, std::max(kOutputChunk, 2 * out.size())));
    }
    PACKSTORE_ASSIGN_OR_RETURN(size_t produced,
                               decompressor->Produce(out.data() + total, out.size() - total));
    if (produced == 0) break;
    total += produced;
  }
  out.resize(total);
  if (total == expected_size) {
    // A stream of the right size has nothing left; this also lets the
    // decoder reach the end marker and see any trailing bytes.
    char extra;
    PACKSTORE_ASSIGN_OR_RETURN(size_t produced, decompressor->Produce(&extra, 1));
    if (produced > 0) {
      return absl::DataLossError(
          StrCat(KindName(kind), ": decompresses to more than ", expected_size, " bytes"));
    }
  }
  if (!decompressor->Finished()) {
    return absl::DataLossError(StrCat(KindName(kind), ": compressed stream is truncated"));
  }
  if (total != expected_size) {
    return absl::DataLossError(
        StrCat(KindName(kind), ": decompresses to ", total, " bytes, expected ", expected_size));
  }
  return out;
}

bool SampleIsCompressible(std::string_view sample) {
  if (sample.empty()) return false;
  absl::StatusOr<std::string> compressed = CompressAll(Codec{CodecKind::kZlib, 1}, sample);
  // Not compressing is always safe; a sample the codec cannot handle says
  // nothing in favour of compression.
  if (!compressed.ok()) return false;
  // compressed < 0.9 * sample, in integers so the boundary is exact.
  return compressed->size() * 10 < sample.size() * 9;
}

std::vector<uint64_t> SampleOffsets(uint64_t size) {
  if (size <= kSamplePieces * kSamplePieceSize) return {0};
  // Offset i is floor(i * last / (kSamplePieces - 1)), split into quotient
  // and remainder so the product cannot overflow for any 64-bit size.
  const uint64_t last = size - kSamplePieceSize;
  const uint64_t steps = kSamplePieces - 1;
  const uint64_t quotient = last / steps;
  const uint64_t remainder = last % steps;
  std::vector<uint64_t> offsets;
  offsets.reserve(kSamplePieces);
  for (uint64_t i = 0; i < kSamplePieces; ++i) {
    offsets.push_back(quotient * i + remainder * i / steps);
  }
  return offsets;
}

}  // namespace packstore
