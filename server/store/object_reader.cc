// Streaming object reads; see object_reader.h.
#include "server/store/object_reader.h"

#include <algorithm>

#include "common/str_cat.h"
#include "common/status_util.h"

namespace packstore {
namespace {
constexpr size_t kInputChunk = 256 << 10;
}  // namespace

absl::Status UndecodableObject(std::string_view key, const absl::Status& error) {
  return absl::DataLossError(
      StrCat("object ", key, " does not decode (", error.message(), "): run Validate"));
}

absl::Status ObjectReadError(std::string_view key, const absl::Status& error) {
  if (!absl::IsDataLoss(error)) return error;
  return absl::DataLossError(StrCat("object ", key, ": ", error.message()));
}

ObjectReader::ObjectReader(std::string key, std::shared_ptr<const StoredFile> file,
                           uint64_t offset, uint64_t length, uint64_t size, bool compressed,
                           CodecKind kind)
    : key_(std::move(key)),
      file_(std::move(file)),
      offset_(offset),
      length_(length),
      size_(size),
      compressed_(compressed),
      kind_(kind) {}

ObjectReader::~ObjectReader() = default;

absl::StatusOr<size_t> ObjectReader::Read(char* buf, size_t capacity) {
  capacity = static_cast<size_t>(std::min<uint64_t>(capacity, size_ - position_));
  if (capacity == 0) return 0;
  if (compressed_) return ReadCompressed(buf, capacity);
  if (absl::Status read = file_->ReadAt(offset_ + position_, buf, capacity); !read.ok()) {
    return ObjectReadError(key_, read);
  }
  position_ += capacity;
  return capacity;
}

absl::Status ObjectReader::Restart() {
  PACKSTORE_ASSIGN_OR_RETURN(decompressor_, Decompressor::Create(kind_));
  input_consumed_ = 0;
  position_ = 0;
  return absl::OkStatus();
}

absl::StatusOr<size_t> ObjectReader::ReadCompressed(char* buf, size_t capacity) {
  if (!decompressor_) PACKSTORE_RETURN_IF_ERROR(Restart());
  size_t produced = 0;
  while (produced < capacity) {
    if (decompressor_->NeedsInput()) {
      if (input_consumed_ == length_) break;
      size_t n = static_cast<size_t>(std::min<uint64_t>(kInputChunk, length_ - input_consumed_));
      input_.resize(n);
      if (absl::Status read = file_->ReadAt(offset_ + input_consumed_, input_.data(), n);
          !read.ok()) {
        return ObjectReadError(key_, read);
      }
      input_consumed_ += n;
      decompressor_->Feed(input_);
    }
    absl::StatusOr<size_t> n = decompressor_->Produce(buf + produced, capacity - produced);
    if (absl::IsDataLoss(n.status())) return UndecodableObject(key_, n.status());
    if (!n.ok()) return n.status();
    produced += *n;
    if (*n == 0 && decompressor_->Finished()) break;
  }
  position_ += produced;
  if (produced < capacity) {
    return absl::DataLossError(StrCat("object ", key_, " decodes to ", position_,
                                      " bytes; its recorded size is ", size_, ": run Validate"));
  }
  return produced;
}

absl::Status ObjectReader::Seek(uint64_t position) {
  if (position > size_) {
    return absl::OutOfRangeError(
        StrCat("offset ", position, " is past the end of the object (", size_, " bytes)"));
  }
  if (!compressed_) {
    position_ = position;
    return absl::OkStatus();
  }
  if (position < position_ || !decompressor_) PACKSTORE_RETURN_IF_ERROR(Restart());
  std::string scratch(std::min<uint64_t>(kInputChunk, position - position_), '\0');
  while (position_ < position) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(scratch.size(), position - position_));
    PACKSTORE_RETURN_IF_ERROR(ReadCompressed(scratch.data(), want).status());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ObjectReader::ReadRest() {
  std::string out(size_ - position_, '\0');
  size_t done = 0;
  while (done < out.size()) {
    PACKSTORE_ASSIGN_OR_RETURN(size_t n, Read(out.data() + done, out.size() - done));
    if (n == 0) break;
    done += n;
  }
  return out;
}

}  // namespace packstore
