// Tests for the zlib and zstd codecs, the codec names and the AUTO sample.
#include "common/codec.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/str_cat.h"
#include "gtest/gtest.h"

namespace packstore {
namespace {

constexpr size_t kMiB = 1024 * 1024;

std::string RandomBytes(size_t size, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(size, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

// Words drawn at random: compressible, but not trivially.
std::string Text(size_t size, uint64_t seed) {
  static constexpr std::string_view kWords[] = {
      "pack ", "object ", "loose ",   "index ", "sqlite ", "offset ", "length ",
      "hash ", "zlib ",   "stream\n", "the ",   "of ",     "and ",    "container "};
  std::mt19937_64 rng(seed);
  std::string out;
  out.reserve(size + 16);
  while (out.size() < size) out += kWords[rng() % std::size(kWords)];
  out.resize(size);
  return out;
}

std::vector<std::string> Inputs() {
  return {"",
          "x",
          "hello, packstore",
          Text(1000, 1),
          RandomBytes(64 * 1024 + 1, 2),
          Text(3 * kMiB + 17, 3),
          RandomBytes(3 * kMiB + 5, 4)};
}

// Odd sizes so chunk edges fall everywhere relative to the codecs' blocks.
constexpr size_t kChunkSizes[] = {1, 7, 4093, 65537, kMiB + 3};

absl::StatusOr<std::string> CompressInChunks(Codec codec, std::string_view input) {
  absl::StatusOr<std::unique_ptr<Compressor>> compressor = Compressor::Create(codec);
  if (!compressor.ok()) return compressor.status();
  std::string out;
  for (size_t i = 0; !input.empty(); ++i) {
    const size_t n = std::min(kChunkSizes[i % std::size(kChunkSizes)], input.size());
    if (absl::Status s = (*compressor)->Compress(input.substr(0, n), &out); !s.ok()) return s;
    input.remove_prefix(n);
  }
  if (absl::Status s = (*compressor)->Finish(&out); !s.ok()) return s;
  return out;
}

// Drives a Decompressor the way a pack reader does: feeds `feed` bytes at a
// time when asked and pulls into a `capacity`-byte buffer, checking the
// Produce contract on every call. Trailing input is left for the decoder
// to report.
absl::StatusOr<std::string> DecompressStreaming(CodecKind kind, std::string_view compressed,
                                                size_t feed, size_t capacity) {
  absl::StatusOr<std::unique_ptr<Decompressor>> decompressor = Decompressor::Create(kind);
  if (!decompressor.ok()) return decompressor.status();
  Decompressor& d = **decompressor;
  std::string out;
  std::vector<char> buffer(capacity);
  while (!d.Finished()) {
    if (d.NeedsInput()) {
      if (compressed.empty()) return absl::DataLossError("test: ran out of input");
      const size_t n = std::min(feed, compressed.size());
      d.Feed(compressed.substr(0, n));
      compressed.remove_prefix(n);
    }
    absl::StatusOr<size_t> produced = d.Produce(buffer.data(), capacity);
    if (!produced.ok()) return produced.status();
    EXPECT_LE(*produced, capacity);
    if (*produced == 0 && !d.NeedsInput() && !d.Finished()) {
      ADD_FAILURE() << "Produce returned 0 without needing input or finishing";
      return absl::InternalError("stuck");
    }
    out.append(buffer.data(), *produced);
  }
  if (!compressed.empty()) return absl::DataLossError("test: input left after the end");
  return out;
}

uint32_t Adler32(std::string_view data) {
  uint32_t a = 1;
  uint32_t b = 0;
  for (unsigned char c : data) {
    a = (a + c) % 65521;
    b = (b + a) % 65521;
  }
  return (b << 16) | a;
}

std::string BigEndian32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

std::vector<Codec> AllCodecs() {
  std::vector<Codec> codecs;
  for (int level = 1; level <= 9; ++level) codecs.push_back({CodecKind::kZlib, level});
  for (int level : {1, 3, 10, 19}) codecs.push_back({CodecKind::kZstd, level});
  return codecs;
}

class CodecRoundTripTest : public testing::TestWithParam<Codec> {};

TEST_P(CodecRoundTripTest, ChunkedCompressionRoundTrips) {
  const Codec codec = GetParam();
  for (const std::string& input : Inputs()) {
    SCOPED_TRACE(StrCat("input size ", input.size()));
    absl::StatusOr<std::string> compressed = CompressInChunks(codec, input);
    ASSERT_TRUE(compressed.ok()) << compressed.status();

    absl::StatusOr<std::string> whole = DecompressAll(codec.kind, *compressed, input.size());
    ASSERT_TRUE(whole.ok()) << whole.status();
    EXPECT_TRUE(*whole == input);

    absl::StatusOr<std::string> streamed =
        DecompressStreaming(codec.kind, *compressed, 4093, 65537);
    ASSERT_TRUE(streamed.ok()) << streamed.status();
    EXPECT_TRUE(*streamed == input);

    // One-shot compression runs the same compressor; small inputs are
    // enough to show its stream is accepted too.
    if (input.size() > kMiB) continue;
    absl::StatusOr<std::string> one_shot = CompressAll(codec, input);
    ASSERT_TRUE(one_shot.ok()) << one_shot.status();
    whole = DecompressAll(codec.kind, *one_shot, input.size());
    ASSERT_TRUE(whole.ok()) << whole.status();
    EXPECT_TRUE(*whole == input);
  }
}

TEST_P(CodecRoundTripTest, RandomInputDoesNotGrowMuch) {
  const std::string input = RandomBytes(kMiB, 5);
  absl::StatusOr<std::string> compressed = CompressAll(GetParam(), input);
  ASSERT_TRUE(compressed.ok()) << compressed.status();
  EXPECT_LT(compressed->size(), input.size() + input.size() / 100);
}

TEST_P(CodecRoundTripTest, TinyCapacitiesAndTinyFeeds) {
  const Codec codec = GetParam();
  const std::string input = Text(20000, 6) + RandomBytes(3000, 7);
  absl::StatusOr<std::string> compressed = CompressAll(codec, input);
  ASSERT_TRUE(compressed.ok()) << compressed.status();
  for (size_t capacity : {1, 2, 3, 17}) {
    for (size_t feed : {size_t{1}, size_t{5}, compressed->size()}) {
      SCOPED_TRACE(StrCat("capacity ", capacity, " feed ", feed));
      absl::StatusOr<std::string> out =
          DecompressStreaming(codec.kind, *compressed, feed, capacity);
      ASSERT_TRUE(out.ok()) << out.status();
      EXPECT_TRUE(*out == input);
    }
  }
}

TEST_P(CodecRoundTripTest, EveryTruncationIsDataLoss) {
  const Codec codec = GetParam();
  const std::string input = Text(5000, 8);
  absl::StatusOr<std::string> compressed = CompressAll(codec, input);
  ASSERT_TRUE(compressed.ok()) << compressed.status();
  for (size_t length = 0; length < compressed->size(); ++length) {
    EXPECT_EQ(
        DecompressAll(codec.kind, compressed->substr(0, length), input.size()).status().code(),
        absl::StatusCode::kDataLoss)
        << "prefix " << length << " of " << compressed->size();
  }
}

TEST_P(CodecRoundTripTest, EveryCorruptedByteIsDataLoss) {
  const Codec codec = GetParam();
  const std::string input = Text(5000, 9);
  absl::StatusOr<std::string> compressed = CompressAll(codec, input);
  ASSERT_TRUE(compressed.ok()) << compressed.status();
  for (size_t i = 0; i < compressed->size(); ++i) {
    std::string corrupt = *compressed;
    corrupt[i] = static_cast<char>(corrupt[i] ^ 0xff);
    EXPECT_EQ(DecompressAll(codec.kind, corrupt, input.size()).status().code(),
              absl::StatusCode::kDataLoss)
        << "byte " << i << " of " << compressed->size();
  }
}

TEST_P(CodecRoundTripTest, TrailingBytesAreDataLoss) {
  const Codec codec = GetParam();
  const std::string input = Text(5000, 10);
  absl::StatusOr<std::string> compressed = CompressAll(codec, input);
  ASSERT_TRUE(compressed.ok()) << compressed.status();
  for (const std::string& tail : {std::string(1, '\0'), std::string("garbage"), *compressed}) {
    EXPECT_EQ(DecompressAll(codec.kind, *compressed + tail, input.size()).status().code(),
              absl::StatusCode::kDataLoss)
        << "tail of " << tail.size();
    EXPECT_EQ(DecompressStreaming(codec.kind, *compressed + tail, 1 << 20, 1 << 20).status().code(),
              absl::StatusCode::kDataLoss);
  }
}

TEST_P(CodecRoundTripTest, SizeMismatchIsDataLoss) {
  const Codec codec = GetParam();
  const std::string input = Text(70000, 11);
  absl::StatusOr<std::string> compressed = CompressAll(codec, input);
  ASSERT_TRUE(compressed.ok()) << compressed.status();
  for (size_t expected : {size_t{0}, size_t{1}, input.size() - 1, input.size() + 1, size_t{1} << 40,
                          std::numeric_limits<size_t>::max()}) {
    EXPECT_EQ(DecompressAll(codec.kind, *compressed, expected).status().code(),
              absl::StatusCode::kDataLoss)
        << "expected " << expected;
  }
}

INSTANTIATE_TEST_SUITE_P(AllCodecs, CodecRoundTripTest, testing::ValuesIn(AllCodecs()),
                         [](const testing::TestParamInfo<Codec>& info) {
                           return StrCat(info.param.kind == CodecKind::kZlib ? "zlib" : "zstd",
                                         info.param.level);
                         });

TEST(ZlibFormatTest, EmptyObjectIsExactlyTheKnownBytes) {
  const std::string expected("\x78\x01\x03\x00\x00\x00\x00\x01", 8);
  absl::StatusOr<std::string> one_shot = CompressAll({CodecKind::kZlib, 1}, "");
  ASSERT_TRUE(one_shot.ok()) << one_shot.status();
  EXPECT_TRUE(*one_shot == expected);

  absl::StatusOr<std::unique_ptr<Compressor>> compressor =
      Compressor::Create({CodecKind::kZlib, 1});
  ASSERT_TRUE(compressor.ok()) << compressor.status();
  std::string streamed;
  ASSERT_TRUE((*compressor)->Compress("", &streamed).ok());
  ASSERT_TRUE((*compressor)->Finish(&streamed).ok());
  EXPECT_TRUE(streamed == expected);

  absl::StatusOr<std::string> decoded = DecompressAll(CodecKind::kZlib, expected, 0);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(decoded->empty());
}

TEST(ZlibFormatTest, StreamsHaveTheRfc1950WrapperAtEveryLevel) {
  const std::string input = Text(100000, 12);
  for (int level = 1; level <= 9; ++level) {
    absl::StatusOr<std::string> compressed = CompressAll({CodecKind::kZlib, level}, input);
    ASSERT_TRUE(compressed.ok()) << compressed.status();
    ASSERT_GE(compressed->size(), 6u);
    const unsigned cmf = static_cast<unsigned char>((*compressed)[0]);
    const unsigned flg = static_cast<unsigned char>((*compressed)[1]);
    EXPECT_EQ(cmf, 0x78u) << "deflate with a 32 KiB window";
    EXPECT_EQ((cmf * 256 + flg) % 31, 0u) << "header check";
    EXPECT_EQ(flg & 0x20, 0u) << "no preset dictionary";
    EXPECT_TRUE(compressed->substr(compressed->size() - 4) == BigEndian32(Adler32(input)))
        << "Adler-32 trailer at level " << level;
  }
  absl::StatusOr<std::string> level1 = CompressAll({CodecKind::kZlib, 1}, input);
  ASSERT_TRUE(level1.ok());
  EXPECT_TRUE(level1->substr(0, 2) == std::string("\x78\x01", 2));
}

TEST(ZlibFormatTest, RawDeflateAndGzipAreRejected) {
  const std::string raw_empty("\x03\x00", 2);
  const std::string gzip_empty(
      "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
  for (const std::string& foreign : {raw_empty, gzip_empty}) {
    EXPECT_EQ(DecompressAll(CodecKind::kZlib, foreign, 0).status().code(),
              absl::StatusCode::kDataLoss);
  }
}

TEST(ZstdFormatTest, FramesStartWithTheZstdMagic) {
  absl::StatusOr<std::string> compressed = CompressAll({CodecKind::kZstd, 3}, "abc");
  ASSERT_TRUE(compressed.ok()) << compressed.status();
  EXPECT_TRUE(compressed->substr(0, 4) == std::string("\x28\xb5\x2f\xfd", 4));
}

TEST(ZstdFormatTest, RejectsFramesAskingForAHugeWindow) {
  // Magic, frame header descriptor 0 (no content size, no checksum), a
  // window descriptor, then one empty last raw block.
  auto frame = [](char window_descriptor) {
    return std::string("\x28\xb5\x2f\xfd\x00", 5) + window_descriptor +
           std::string("\x01\x00\x00", 3);
  };
  // Window log 10 + (descriptor >> 3): 0x60 is 2^22, 0x88 is 2^27.
  absl::StatusOr<std::string> small = DecompressAll(CodecKind::kZstd, frame('\x60'), 0);
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_TRUE(small->empty());
  EXPECT_EQ(DecompressAll(CodecKind::kZstd, frame('\x88'), 0).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(CodecFormatTest, EachDecoderRejectsTheOtherFormat) {
  const std::string input = Text(1000, 13);
  absl::StatusOr<std::string> zlib = CompressAll({CodecKind::kZlib, 6}, input);
  absl::StatusOr<std::string> zstd = CompressAll({CodecKind::kZstd, 3}, input);
  ASSERT_TRUE(zlib.ok() && zstd.ok());
  EXPECT_EQ(DecompressAll(CodecKind::kZstd, *zlib, input.size()).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(DecompressAll(CodecKind::kZlib, *zstd, input.size()).status().code(),
            absl::StatusCode::kDataLoss);
}

// A small input that expands to 100 MiB must come out through the caller's
// 64 KiB buffer, never more than that per call.
class DecompressionBombTest : public testing::TestWithParam<Codec> {
 protected:
  static constexpr size_t kBombSize = 100 * kMiB;

  static std::string Bomb(Codec codec) {
    absl::StatusOr<std::unique_ptr<Compressor>> compressor = Compressor::Create(codec);
    EXPECT_TRUE(compressor.ok()) << compressor.status();
    const std::string zeros(kMiB, '\0');
    std::string out;
    for (size_t i = 0; i < kBombSize / kMiB; ++i) {
      EXPECT_TRUE((*compressor)->Compress(zeros, &out).ok());
    }
    EXPECT_TRUE((*compressor)->Finish(&out).ok());
    return out;
  }
};

TEST_P(DecompressionBombTest, ProducesIntoTheCallersBufferOnly) {
  const Codec codec = GetParam();
  const std::string bomb = Bomb(codec);
  // Deflate cannot beat about 1032:1; zstd shrinks zeros to a few bytes per
  // 128 KiB block.
  EXPECT_LT(bomb.size(), codec.kind == CodecKind::kZlib ? 110 * 1024u : 4 * 1024u);

  absl::StatusOr<std::unique_ptr<Decompressor>> decompressor = Decompressor::Create(codec.kind);
  ASSERT_TRUE(decompressor.ok()) << decompressor.status();
  Decompressor& d = **decompressor;
  ASSERT_TRUE(d.NeedsInput());
  ASSERT_FALSE(d.Finished());
  d.Feed(bomb);

  constexpr size_t kCapacity = 64 * 1024;
  std::vector<char> buffer(kCapacity);
  size_t total = 0;
  size_t calls = 0;
  bool all_zero = true;
  while (!d.Finished()) {
    ASSERT_FALSE(d.NeedsInput()) << "the whole stream was fed";
    absl::StatusOr<size_t> produced = d.Produce(buffer.data(), kCapacity);
    ASSERT_TRUE(produced.ok()) << produced.status();
    ASSERT_LE(*produced, kCapacity);
    all_zero = all_zero && std::all_of(buffer.begin(), buffer.begin() + *produced,
                                       [](char c) { return c == '\0'; });
    total += *produced;
    ASSERT_LT(++calls, 2 * kBombSize / kCapacity) << "not making progress";
  }
  EXPECT_EQ(total, kBombSize);
  EXPECT_TRUE(all_zero);
  EXPECT_FALSE(d.NeedsInput());
  absl::StatusOr<size_t> after_end = d.Produce(buffer.data(), kCapacity);
  ASSERT_TRUE(after_end.ok()) << after_end.status();
  EXPECT_EQ(*after_end, 0u);
}

TEST_P(DecompressionBombTest, DecompressAllStopsAtTheExpectedSize) {
  const Codec codec = GetParam();
  EXPECT_EQ(DecompressAll(codec.kind, Bomb(codec), 4096).status().code(),
            absl::StatusCode::kDataLoss);
}

INSTANTIATE_TEST_SUITE_P(ZlibAndZstd, DecompressionBombTest,
                         testing::Values(Codec{CodecKind::kZlib, 9}, Codec{CodecKind::kZstd, 19}),
                         [](const testing::TestParamInfo<Codec>& info) {
                           return std::string(info.param.kind == CodecKind::kZlib ? "zlib"
                                                                                  : "zstd");
                         });

TEST(DecompressorTest, BytesFedAfterTheEndAreDataLoss) {
  absl::StatusOr<std::string> compressed = CompressAll({CodecKind::kZstd, 3}, "abc");
  ASSERT_TRUE(compressed.ok());
  absl::StatusOr<std::unique_ptr<Decompressor>> decompressor =
      Decompressor::Create(CodecKind::kZstd);
  ASSERT_TRUE(decompressor.ok());
  Decompressor& d = **decompressor;
  d.Feed(*compressed);
  char buffer[16];
  absl::StatusOr<size_t> produced = d.Produce(buffer, sizeof(buffer));
  ASSERT_TRUE(produced.ok()) << produced.status();
  EXPECT_EQ(std::string_view(buffer, *produced), "abc");
  ASSERT_TRUE(d.Finished());
  d.Feed("more");
  EXPECT_EQ(d.Produce(buffer, sizeof(buffer)).status().code(), absl::StatusCode::kDataLoss);
}

TEST(DecompressorTest, ErrorsStick) {
  absl::StatusOr<std::unique_ptr<Decompressor>> decompressor =
      Decompressor::Create(CodecKind::kZlib);
  ASSERT_TRUE(decompressor.ok());
  Decompressor& d = **decompressor;
  d.Feed("not a zlib stream at all");
  char buffer[16];
  EXPECT_EQ(d.Produce(buffer, sizeof(buffer)).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(d.Produce(buffer, sizeof(buffer)).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(d.NeedsInput());
  EXPECT_FALSE(d.Finished());
}

TEST(CompressorTest, RejectsLevelsOutOfRange) {
  for (Codec codec :
       {Codec{CodecKind::kZlib, 0}, Codec{CodecKind::kZlib, 10}, Codec{CodecKind::kZlib, -1},
        Codec{CodecKind::kZstd, 0}, Codec{CodecKind::kZstd, 20}}) {
    EXPECT_EQ(Compressor::Create(codec).status().code(), absl::StatusCode::kInvalidArgument)
        << CodecName(codec);
  }
}

TEST(CompressorTest, UseAfterFinishFails) {
  for (CodecKind kind : {CodecKind::kZlib, CodecKind::kZstd}) {
    absl::StatusOr<std::unique_ptr<Compressor>> compressor = Compressor::Create({kind, 1});
    ASSERT_TRUE(compressor.ok());
    std::string out;
    ASSERT_TRUE((*compressor)->Finish(&out).ok());
    EXPECT_EQ((*compressor)->Compress("x", &out).code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ((*compressor)->Finish(&out).code(), absl::StatusCode::kFailedPrecondition);
  }
}

TEST(ParseCodecTest, AcceptsEveryLevelAndRoundTrips) {
  for (int level = 1; level <= 9; ++level) {
    const std::string name = StrCat("zlib+", level);
    absl::StatusOr<Codec> codec = ParseCodec(name);
    ASSERT_TRUE(codec.ok()) << codec.status();
    EXPECT_EQ(*codec, (Codec{CodecKind::kZlib, level}));
    EXPECT_EQ(CodecName(*codec), name);
    EXPECT_TRUE(IsDiskObjectstoreCompatible(*codec));
  }
  for (int level = 1; level <= 19; ++level) {
    const std::string name = StrCat("zstd+", level);
    absl::StatusOr<Codec> codec = ParseCodec(name);
    ASSERT_TRUE(codec.ok()) << codec.status();
    EXPECT_EQ(*codec, (Codec{CodecKind::kZstd, level}));
    EXPECT_EQ(CodecName(*codec), name);
    EXPECT_FALSE(IsDiskObjectstoreCompatible(*codec));
  }
}

TEST(ParseCodecTest, RejectsEverythingElse) {
  for (std::string_view name : {"zlib+0", "zlib+10", "gzip", "zlib", "zstd+20", "zstd+0", "zstd",
                                "zlib+", "zlib+01", "zlib+-1", "zlib++1", "zlib+ 1", "zlib+1 ",
                                "ZLIB+1", "zstd+3x", "zstd+100", "", "none", "lz4+1"}) {
    absl::StatusOr<Codec> codec = ParseCodec(name);
    ASSERT_EQ(codec.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_NE(codec.status().message().find("zlib+1"), std::string_view::npos) << codec.status();
    EXPECT_NE(codec.status().message().find("zstd+19"), std::string_view::npos) << codec.status();
  }
}

TEST(SampleTest, EmptySampleIsNotCompressible) { EXPECT_FALSE(SampleIsCompressible("")); }

TEST(SampleTest, DecidesOnTheNinetyPercentThreshold) {
  constexpr size_t kSample = kSamplePieces * kSamplePieceSize;
  EXPECT_FALSE(SampleIsCompressible(RandomBytes(kSample, 14)));
  EXPECT_TRUE(SampleIsCompressible(std::string(kSample, 'a')));
  EXPECT_TRUE(SampleIsCompressible(Text(kSample, 15)));
  // Random data does not shrink, zeros almost vanish: the compressed size
  // tracks the random share, which puts these two either side of 0.9.
  EXPECT_TRUE(SampleIsCompressible(RandomBytes(kSample * 88 / 100, 16) +
                                   std::string(kSample * 12 / 100, '\0')));
  EXPECT_FALSE(SampleIsCompressible(RandomBytes(kSample * 92 / 100, 17) +
                                    std::string(kSample * 8 / 100, '\0')));
}

TEST(SampleTest, SmallObjectsAreSampledWhole) {
  for (uint64_t size : {uint64_t{0}, uint64_t{1}, uint64_t{1024}, uint64_t{128 * 1024}}) {
    EXPECT_EQ(SampleOffsets(size), std::vector<uint64_t>{0}) << size;
  }
}

TEST(SampleTest, OffsetsSpreadFromStartToEnd) {
  for (uint64_t size : {uint64_t{128 * 1024 + 1}, uint64_t{1000000}, uint64_t{3} << 30,
                        std::numeric_limits<uint64_t>::max()}) {
    SCOPED_TRACE(size);
    const std::vector<uint64_t> offsets = SampleOffsets(size);
    ASSERT_EQ(offsets.size(), kSamplePieces);
    EXPECT_EQ(offsets.front(), 0u);
    EXPECT_EQ(offsets.back() + kSamplePieceSize, size);
    uint64_t min_gap = std::numeric_limits<uint64_t>::max();
    uint64_t max_gap = 0;
    for (size_t i = 1; i < offsets.size(); ++i) {
      ASSERT_GT(offsets[i], offsets[i - 1]);
      min_gap = std::min(min_gap, offsets[i] - offsets[i - 1]);
      max_gap = std::max(max_gap, offsets[i] - offsets[i - 1]);
    }
    EXPECT_GE(min_gap, kSamplePieceSize) << "pieces must not overlap";
    EXPECT_LE(max_gap - min_gap, 1u) << "evenly spread";
  }
}

TEST(SampleTest, OffsetsForAnExactStep) {
  const uint64_t step = 2048;
  const std::vector<uint64_t> offsets =
      SampleOffsets(kSamplePieceSize + (kSamplePieces - 1) * step);
  ASSERT_EQ(offsets.size(), kSamplePieces);
  for (size_t i = 0; i < offsets.size(); ++i) EXPECT_EQ(offsets[i], i * step);
}

}  // namespace
}  // namespace packstore
