#include "core/tls/tls.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/flags.h"
#include "core/status_macros.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace upkeep::tls {
namespace {

namespace fs = std::filesystem;

struct EvpPkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
struct BioFree {
  void operator()(BIO* p) const { BIO_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using BioPtr = std::unique_ptr<BIO, BioFree>;

// The last OpenSSL error(s) as text, clearing the queue.
std::string SslErrors() {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

absl::Status SslError(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", SslErrors()));
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Writes `data` to path via a temporary file in the same directory (mode `mode`), fsynced and
// renamed into place.
absl::Status WriteFileAtomically(const std::string& path, const std::string& data, mode_t mode) {
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  ::unlink(tmp.c_str());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  }
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return absl::InternalError(absl::StrCat("cannot write ", tmp, ": ", std::strerror(err)));
    }
    off += static_cast<size_t>(n);
  }
  ::fchmod(fd, mode);  // umask may have narrowed or the mode differs from an old file's
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot write ", tmp, ": ", std::strerror(errno)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return absl::InternalError(
        absl::StrCat("cannot rename ", tmp, " to ", path, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

absl::StatusOr<PkeyPtr> NewKey() {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return SslError("generating an EC P-256 key");
  return key;
}

absl::StatusOr<std::string> KeyPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return SslError("encoding a private key");
  }
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

absl::StatusOr<std::string> CertPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return SslError("encoding a certificate");
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

absl::StatusOr<X509Ptr> ParseCert(const std::string& pem, const std::string& path) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not a PEM certificate: ", SslErrors()));
  }
  return cert;
}

absl::StatusOr<PkeyPtr> ParseKey(const std::string& pem, const std::string& path) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not a PEM private key: ", SslErrors()));
  }
  return key;
}

absl::Status AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad certificate extension ", OBJ_nid2sn(nid), "=", value, ": ", SslErrors()));
  }
  const int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (ok != 1) return SslError("adding a certificate extension");
  return absl::OkStatus();
}

// A certificate with a random 127-bit serial, the given subject CN, validity and public key.
absl::StatusOr<X509Ptr> NewCert(const std::string& cn, absl::Time not_before, absl::Time not_after,
                                EVP_PKEY* key) {
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), 2) != 1) return SslError("creating a certificate");
  BIGNUM* bn = BN_new();
  if (bn == nullptr || BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get())) == nullptr) {
    BN_free(bn);
    return SslError("choosing a serial number");
  }
  BN_free(bn);
  if (ASN1_TIME_set(X509_getm_notBefore(cert.get()), absl::ToTimeT(not_before)) == nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert.get()), absl::ToTimeT(not_after)) == nullptr) {
    return SslError("setting the validity");
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>("upkeep"), -1, -1,
                                 0) != 1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                                 0) != 1) {
    return SslError("setting the subject");
  }
  if (X509_set_pubkey(cert.get(), key) != 1) return SslError("setting the public key");
  return cert;
}

absl::Status Sign(X509* cert, EVP_PKEY* ca_key) {
  if (X509_sign(cert, ca_key, EVP_sha256()) <= 0) return SslError("signing the certificate");
  return absl::OkStatus();
}

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 128 || name[0] == '.') return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

bool ValidRole(const std::string& role) {
  return role == "viewer" || role == "operator" || role == "admin";
}

bool LooksLikeIp(const std::string& s) {
  ASN1_OCTET_STRING* ip = a2i_IPADDRESS(s.c_str());
  if (ip == nullptr) {
    ERR_clear_error();
    return false;
  }
  ASN1_OCTET_STRING_free(ip);
  return true;
}

bool ValidDnsName(const std::string& s) {
  if (s.empty() || s.size() > 253) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '*') {
      return false;
    }
  }
  return true;
}

const char* KindWord(IdentityKind kind) {
  switch (kind) {
    case IdentityKind::kController:
      return "controller";
    case IdentityKind::kAgent:
      return "agent";
    case IdentityKind::kUser:
      return "user";
  }
  return "unknown";
}

absl::Status CheckReadable(const std::string& path, absl::string_view what) {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat("no ", what, " file given"));
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat(what, " file ", path, " does not exist"));
  }
  return absl::OkStatus();
}

// Checks that cert and key parse and belong together, and that the CA file parses.
absl::Status CheckIdentity(const std::string& cert_path, const std::string& key_path) {
  ASSIGN_OR_RETURN(std::string cert_pem, ReadFile(cert_path));
  ASSIGN_OR_RETURN(std::string key_pem, ReadFile(key_path));
  ASSIGN_OR_RETURN(X509Ptr cert, ParseCert(cert_pem, cert_path));
  ASSIGN_OR_RETURN(PkeyPtr key, ParseKey(key_pem, key_path));
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat("key ", key_path, " does not belong to certificate ", cert_path));
  }
  return absl::OkStatus();
}

unsigned int RefreshSeconds(absl::Duration d) {
  const int64_t s = absl::ToInt64Seconds(d);
  return s < 1 ? 1u : static_cast<unsigned int>(s);
}

}  // namespace

IssueRequest IssueRequest::Controller(std::string name, std::vector<std::string> sans) {
  IssueRequest r;
  r.kind = IdentityKind::kController;
  r.name = std::move(name);
  r.sans = std::move(sans);
  return r;
}

IssueRequest IssueRequest::Agent(std::string host) {
  IssueRequest r;
  r.kind = IdentityKind::kAgent;
  r.name = std::move(host);
  return r;
}

IssueRequest IssueRequest::User(std::string name, std::string role) {
  IssueRequest r;
  r.kind = IdentityKind::kUser;
  r.name = std::move(name);
  r.role = std::move(role);
  return r;
}

std::string IdentityUri(IdentityKind kind, const std::string& name, const std::string& role) {
  std::string uri = absl::StrCat(kIdentityScheme, KindWord(kind), "/", name);
  if (kind == IdentityKind::kUser) absl::StrAppend(&uri, "?role=", role);
  return uri;
}

std::vector<std::string> SplitSans(const std::string& comma_separated) {
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(comma_separated, ',')) {
    part = absl::StripAsciiWhitespace(part);
    if (!part.empty()) out.emplace_back(part);
  }
  return out;
}

absl::Status InitCa(const std::string& dir, const CaOptions& options) {
  std::error_code ec;
  if (fs::create_directories(dir, ec)) {
    fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  }
  if (ec) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  }
  const std::string crt = dir + "/ca.crt";
  const std::string key_path = dir + "/ca.key";
  if (fs::exists(crt, ec) || fs::exists(key_path, ec)) {
    return absl::AlreadyExistsError(
        absl::StrCat(dir,
                     " already holds a CA (ca.crt or ca.key); refusing to replace it, since every "
                     "certificate it issued would stop being trusted. Use another --dir, or remove "
                     "both files on purpose."));
  }
  ASSIGN_OR_RETURN(PkeyPtr key, NewKey());
  const absl::Time now = absl::Now();
  ASSIGN_OR_RETURN(X509Ptr cert, NewCert(options.common_name, now - absl::Minutes(5),
                                         now + options.validity, key.get()));
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get())) != 1) {
    return SslError("setting the issuer");
  }
  RETURN_IF_ERROR(
      AddExtension(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
  RETURN_IF_ERROR(
      AddExtension(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign"));
  RETURN_IF_ERROR(AddExtension(cert.get(), cert.get(), NID_subject_key_identifier, "hash"));
  RETURN_IF_ERROR(Sign(cert.get(), key.get()));
  ASSIGN_OR_RETURN(std::string key_pem, KeyPem(key.get()));
  ASSIGN_OR_RETURN(std::string cert_pem, CertPem(cert.get()));
  RETURN_IF_ERROR(WriteFileAtomically(key_path, key_pem, 0600));
  return WriteFileAtomically(crt, cert_pem, 0644);
}

absl::StatusOr<IssuedFiles> Issue(const std::string& dir, const IssueRequest& request) {
  if (!ValidName(request.name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("name \"", request.name,
                     "\" must be 1-128 letters, digits, '.', '_' or '-' and not start with '.'"));
  }
  std::vector<std::string> san_parts;
  switch (request.kind) {
    case IdentityKind::kUser:
      if (!ValidRole(request.role)) {
        return absl::InvalidArgumentError(
            absl::StrCat("role \"", request.role, "\" must be one of viewer, operator, admin"));
      }
      break;
    case IdentityKind::kController:
      for (const std::string& san : request.sans) {
        if (LooksLikeIp(san)) {
          san_parts.push_back(absl::StrCat("IP:", san));
        } else if (ValidDnsName(san)) {
          san_parts.push_back(absl::StrCat("DNS:", san));
        } else {
          return absl::InvalidArgumentError(
              absl::StrCat("SAN \"", san, "\" is neither an IP address nor a DNS name"));
        }
      }
      break;
    case IdentityKind::kAgent:
      break;
  }
  if (request.kind != IdentityKind::kUser && !request.role.empty()) {
    return absl::InvalidArgumentError("a role is given only to user certificates");
  }
  if (request.kind != IdentityKind::kController && !request.sans.empty()) {
    return absl::InvalidArgumentError("SANs are given only to controller certificates");
  }
  const std::string uri = IdentityUri(request.kind, request.name, request.role);
  san_parts.insert(san_parts.begin(), absl::StrCat("URI:", uri));

  ASSIGN_OR_RETURN(std::string ca_cert_pem, ReadFile(dir + "/ca.crt"));
  ASSIGN_OR_RETURN(std::string ca_key_pem, ReadFile(dir + "/ca.key"));
  ASSIGN_OR_RETURN(X509Ptr ca_cert, ParseCert(ca_cert_pem, dir + "/ca.crt"));
  ASSIGN_OR_RETURN(PkeyPtr ca_key, ParseKey(ca_key_pem, dir + "/ca.key"));

  const absl::Time not_before = request.not_before.value_or(absl::Now() - absl::Minutes(5));
  ASSIGN_OR_RETURN(PkeyPtr key, NewKey());
  ASSIGN_OR_RETURN(X509Ptr cert,
                   NewCert(request.name, not_before, not_before + request.validity, key.get()));
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert.get())) != 1) {
    return SslError("setting the issuer");
  }
  X509* c = cert.get();
  X509* ca = ca_cert.get();
  RETURN_IF_ERROR(AddExtension(c, ca, NID_basic_constraints, "critical,CA:FALSE"));
  RETURN_IF_ERROR(AddExtension(c, ca, NID_key_usage, "critical,digitalSignature"));
  RETURN_IF_ERROR(
      AddExtension(c, ca, NID_ext_key_usage,
                   request.kind == IdentityKind::kController ? "serverAuth" : "clientAuth"));
  RETURN_IF_ERROR(AddExtension(c, ca, NID_subject_key_identifier, "hash"));
  RETURN_IF_ERROR(AddExtension(c, ca, NID_authority_key_identifier, "keyid:always"));
  RETURN_IF_ERROR(AddExtension(c, ca, NID_subject_alt_name, absl::StrJoin(san_parts, ",")));
  RETURN_IF_ERROR(Sign(c, ca_key.get()));

  ASSIGN_OR_RETURN(std::string key_pem, KeyPem(key.get()));
  ASSIGN_OR_RETURN(std::string cert_pem, CertPem(c));
  IssuedFiles out;
  const std::string base = absl::StrCat(dir, "/", KindWord(request.kind), "-", request.name);
  out.cert = base + ".crt";
  out.key = base + ".key";
  out.uri = uri;
  RETURN_IF_ERROR(WriteFileAtomically(out.key, key_pem, 0600));
  RETURN_IF_ERROR(WriteFileAtomically(out.cert, cert_pem, 0644));
  return out;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const std::string& cert, const std::string& key, const std::string& ca,
    const ServerTlsOptions& options) {
  RETURN_IF_ERROR(CheckReadable(cert, "certificate"));
  RETURN_IF_ERROR(CheckReadable(key, "key"));
  RETURN_IF_ERROR(CheckReadable(ca, "CA"));
  RETURN_IF_ERROR(CheckIdentity(cert, key));
  ASSIGN_OR_RETURN(std::string ca_pem, ReadFile(ca));
  RETURN_IF_ERROR(ParseCert(ca_pem, ca).status());
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      key, cert, ca, RefreshSeconds(options.refresh));
  grpc::experimental::TlsServerCredentialsOptions tls(provider);
  tls.watch_root_certs();
  tls.watch_identity_key_cert_pairs();
  tls.set_cert_request_type(options.require_client_certificate
                                ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::experimental::TlsServerCredentials(tls);
  if (!creds) return absl::InternalError("gRPC refused the TLS server options");
  return creds;
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(
    const std::string& ca, const std::string& cert, const std::string& key,
    const ChannelTlsOptions& options) {
  RETURN_IF_ERROR(CheckReadable(ca, "CA"));
  ASSIGN_OR_RETURN(std::string ca_pem, ReadFile(ca));
  RETURN_IF_ERROR(ParseCert(ca_pem, ca).status());
  if (cert.empty() != key.empty()) {
    return absl::InvalidArgumentError("give both a client certificate and its key, or neither");
  }
  std::shared_ptr<grpc::experimental::FileWatcherCertificateProvider> provider;
  if (cert.empty()) {
    provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        ca, RefreshSeconds(options.refresh));
  } else {
    RETURN_IF_ERROR(CheckReadable(cert, "certificate"));
    RETURN_IF_ERROR(CheckReadable(key, "key"));
    RETURN_IF_ERROR(CheckIdentity(cert, key));
    provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        key, cert, ca, RefreshSeconds(options.refresh));
  }
  grpc::experimental::TlsChannelCredentialsOptions tls;
  tls.set_certificate_provider(provider);
  tls.watch_root_certs();
  if (!cert.empty()) tls.watch_identity_key_cert_pairs();
  tls.set_verify_server_certs(true);
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::experimental::TlsCredentials(tls);
  if (!creds) return absl::InternalError("gRPC refused the TLS channel options");
  if (!options.bearer_token.empty()) {
    creds = grpc::CompositeChannelCredentials(creds,
                                              grpc::AccessTokenCredentials(options.bearer_token));
  }
  return creds;
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientCredentials(
    const std::string& address, const std::string& ca, const std::string& cert,
    const std::string& key, const ChannelTlsOptions& options, bool insecure) {
  if (!ca.empty()) return ChannelCredentials(ca, cert, key, options);
  if (!options.bearer_token.empty()) {
    return absl::FailedPreconditionError(
        "a token is only sent over TLS: give --tls-ca (or UPKEEP_TLS_DIR)");
  }
  if (!IsLoopbackAddress(address) && !insecure) {
    return absl::FailedPreconditionError(
        absl::StrCat(address,
                     " is not loopback: connect with --tls-ca/--tls-cert/--tls-key "
                     "(upkeepctl tls), or --insecure to send everything in the clear"));
  }
  return grpc::InsecureChannelCredentials();
}

}  // namespace upkeep::tls
