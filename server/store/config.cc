// config.json parsing and serialization (docs/format.md, "config.json").
#include "server/store/config.h"

#include <cctype>
#include <charconv>
#include <map>

#include "absl/status/status.h"
#include "common/str_cat.h"
#include "common/status_util.h"
#include "server/store/file_io.h"

namespace packstore {
namespace {

// A deliberately small JSON reader: config.json is one flat object. Known
// keys must hold strings or integers; any other key may hold any JSON value
// and is skipped, as disk-objectstore ignores extra keys.
class JsonObjectReader {
 public:
  explicit JsonObjectReader(std::string_view text) : text_(text) {}

  // Scalar members of the top-level object: strings unescaped, integers as
  // their digits, other scalars as written; nested values are skipped.
  struct Member {
    bool is_string = false;
    std::string value;
  };

  absl::StatusOr<std::map<std::string, Member>> ReadObject() {
    std::map<std::string, Member> members;
    SkipSpace();
    if (!Consume('{')) return Error("expected a JSON object");
    SkipSpace();
    if (Consume('}')) return Finish(std::move(members));
    while (true) {
      SkipSpace();
      std::string key;
      if (!ReadString(&key)) return Error("expected a string key");
      SkipSpace();
      if (!Consume(':')) return Error("expected ':'");
      SkipSpace();
      Member member;
      if (Peek() == '"') {
        member.is_string = true;
        if (!ReadString(&member.value)) return Error("malformed string");
      } else if (Peek() == '{' || Peek() == '[') {
        if (!SkipNested()) return Error("malformed nested value");
      } else {
        size_t start = pos_;
        while (pos_ < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[pos_])) ||
                                       text_[pos_] == '-' || text_[pos_] == '+' ||
                                       text_[pos_] == '.')) {
          ++pos_;
        }
        if (start == pos_) return Error("expected a value");
        member.value = std::string(text_.substr(start, pos_ - start));
      }
      if (!members.emplace(key, std::move(member)).second) {
        return Error(StrCat("duplicate key \"", key, "\""));
      }
      SkipSpace();
      if (Consume('}')) return Finish(std::move(members));
      if (!Consume(',')) return Error("expected ',' or '}'");
    }
  }

 private:
  absl::StatusOr<std::map<std::string, Member>> Finish(std::map<std::string, Member> members) {
    SkipSpace();
    if (pos_ != text_.size()) return Error("trailing characters after the object");
    return members;
  }

  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(
        StrCat("config.json is not valid: ", what, " at byte ", pos_));
  }
  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  bool Consume(char c) {
    if (Peek() != c) return false;
    ++pos_;
    return true;
  }
  void SkipSpace() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }

  // Reads a JSON string. \uXXXX escapes outside ASCII are kept verbatim:
  // no value packstore reads can contain them legitimately.
  bool ReadString(std::string* out) {
    if (!Consume('"')) return false;
    while (pos_ < text_.size()) {
      char c = text_[pos_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c != '\\') {
        out->push_back(c);
        continue;
      }
      if (pos_ >= text_.size()) return false;
      char e = text_[pos_++];
      switch (e) {
        case '"': case '\\': case '/': out->push_back(e); break;
        case 'b': out->push_back('\b'); break;
        case 'f': out->push_back('\f'); break;
        case 'n': out->push_back('\n'); break;
        case 'r': out->push_back('\r'); break;
        case 't': out->push_back('\t'); break;
        case 'u':
          if (pos_ + 4 > text_.size()) return false;
          for (char h : text_.substr(pos_, 4)) {
            if (!std::isxdigit(static_cast<unsigned char>(h))) return false;
          }
          out->append("\\u").append(text_.substr(pos_, 4));
          pos_ += 4;
          break;
        default: return false;
      }
    }
    return false;
  }

  // Skips a nested object or array, strings included.
  bool SkipNested() {
    int depth = 0;
    while (pos_ < text_.size()) {
      char c = Peek();
      if (c == '"') {
        std::string ignored;
        if (!ReadString(&ignored)) return false;
        continue;
      }
      ++pos_;
      if (c == '{' || c == '[') {
        ++depth;
      } else if (c == '}' || c == ']') {
        if (--depth == 0) return true;
      }
    }
    return false;
  }

  std::string_view text_;
  size_t pos_ = 0;
};

using Members = std::map<std::string, JsonObjectReader::Member>;

// A JSON string, escaped as Python's json.dumps escapes ASCII. The ids
// packstore makes are plain hex and come out unchanged; a hand-edited
// config.json may hold anything the reader unescaped, and must still
// serialize to JSON that reads back to the same value.
std::string JsonString(std::string_view value) {
  std::string out = "\"";
  for (char c : value) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += "\\u00";
          out.push_back("0123456789abcdef"[(c >> 4) & 0xf]);
          out.push_back("0123456789abcdef"[c & 0xf]);
        } else {
          out.push_back(c);
        }
    }
  }
  out += '"';
  return out;
}

absl::StatusOr<int64_t> IntMember(const Members& m, const std::string& key) {
  auto it = m.find(key);
  if (it == m.end()) return absl::InvalidArgumentError(StrCat("config.json lacks \"", key, "\""));
  const std::string& v = it->second.value;
  int64_t n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (it->second.is_string || ec != std::errc() || end != v.data() + v.size()) {
    return absl::InvalidArgumentError(
        StrCat("config.json: \"", key, "\" must be an integer, found ", v));
  }
  return n;
}

absl::StatusOr<std::string> StringMember(const Members& m, const std::string& key) {
  auto it = m.find(key);
  if (it == m.end()) return absl::InvalidArgumentError(StrCat("config.json lacks \"", key, "\""));
  if (!it->second.is_string) {
    return absl::InvalidArgumentError(StrCat("config.json: \"", key, "\" must be a string"));
  }
  return it->second.value;
}

}  // namespace

std::string SerializeConfigJson(const ContainerConfig& c) {
  return StrCat("{\"container_version\": ", c.container_version,
                      ", \"loose_prefix_len\": ", c.loose_prefix_len,
                      ", \"pack_size_target\": ", c.pack_size_target, ", \"hash_type\": \"",
                      HashTypeName(c.hash_type), "\", \"container_id\": ",
                      JsonString(c.container_id), ", \"compression_algorithm\": \"",
                      CodecName(c.codec), "\"}");
}

absl::StatusOr<ContainerConfig> ParseConfigJson(std::string_view text) {
  PACKSTORE_ASSIGN_OR_RETURN(Members m, JsonObjectReader(text).ReadObject());
  ContainerConfig c;
  PACKSTORE_ASSIGN_OR_RETURN(int64_t version, IntMember(m, "container_version"));
  if (version != 1) {
    return absl::InvalidArgumentError(StrCat(
        "config.json: container_version ", version, " is not supported (this packstore reads 1)"));
  }
  c.container_version = 1;
  PACKSTORE_ASSIGN_OR_RETURN(int64_t prefix, IntMember(m, "loose_prefix_len"));
  PACKSTORE_ASSIGN_OR_RETURN(c.pack_size_target, IntMember(m, "pack_size_target"));
  PACKSTORE_ASSIGN_OR_RETURN(std::string hash_type, StringMember(m, "hash_type"));
  PACKSTORE_ASSIGN_OR_RETURN(c.container_id, StringMember(m, "container_id"));
  PACKSTORE_ASSIGN_OR_RETURN(std::string algorithm, StringMember(m, "compression_algorithm"));
  auto parsed_hash = ParseHashType(hash_type);
  if (!parsed_hash.ok()) return Annotate(parsed_hash.status(), "config.json: hash_type");
  c.hash_type = *parsed_hash;
  if (prefix < 0 || static_cast<size_t>(prefix) >= HexKeyLength(c.hash_type)) {
    return absl::InvalidArgumentError(StrCat(
        "config.json: loose_prefix_len must be between 0 and ", HexKeyLength(c.hash_type) - 1,
        ", found ", prefix));
  }
  c.loose_prefix_len = static_cast<int>(prefix);
  if (c.pack_size_target <= 0) {
    return absl::InvalidArgumentError(StrCat(
        "config.json: pack_size_target must be a positive number of bytes, found ",
        c.pack_size_target));
  }
  auto codec = ParseCodec(algorithm);
  if (!codec.ok()) return Annotate(codec.status(), "config.json: compression_algorithm");
  c.codec = *codec;
  return c;
}

std::string NewContainerId() {
  // uuid4().hex: random, with the version nibble 4 and the RFC 4122 variant.
  std::string id = RandomHex(16);
  id[12] = '4';
  id[16] = "89ab"[id[16] % 4];
  return id;
}

}  // namespace packstore
