#pragma once
/// @file probe.hpp
/// Learning which options a passt binary supports, before anything is spawned.
///
/// passt builds differ widely (Debian 12's 2023 build lacks `--fqdn`,
/// `--map-host-loopback`, `--map-guest-addr`, `--dns-host`, `--freebind`,
/// `--hostname`, `--vhost-user`...), and an unknown option makes passt exit 1
/// with only "unrecognized option". `--version` says nothing useful on older
/// builds, so the probe reads `passt --help` once and keeps the long options
/// it lists; `unsupported_options` then names every option the options would
/// use that this binary lacks, with the JSON key it comes from.

#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <netpasst/argv.hpp>
#include <netpasst/options.hpp>

namespace netpasst {

/// What a passt binary accepts, as learnt from its `--help`.
struct passt_capabilities {
  /// Long options, spelled with their dashes: "--fqdn", "--no-map-gw".
  std::set<std::string> long_options;

  /// True when `long_option` ("--fqdn", or "fqdn") is listed.
  bool supports(std::string_view long_option) const;
};

/// Extracts the long options from `passt --help` output. Tolerates the
/// interleaved "Failed to send N bytes to syslog" lines older builds print
/// when no syslog runs; only option lines (indented, starting with '-') count,
/// and only their leading option names, not options quoted in descriptions.
passt_capabilities parse_passt_help(std::string_view help_text);

/// Runs `binary --help` (looked up in PATH when it has no '/'; stdin
/// /dev/null, at most 5 s) and parses what it prints on stderr and stdout.
/// Errors: `errc::passt_not_found` (cannot be executed), `errc::probe_failed`
/// (timed out, or printed no option list), OS errors. Blocks the caller.
passt_capabilities probe_passt(const std::string& binary, std::error_code& ec);
/// As above; on error `failure` says why, on one printable line: the binary
/// is missing (and where it was looked for), a directory, not executable,
/// did not finish within 5 s, or ended with status N and printed no option
/// list (with the end of its stderr, quoted).
passt_capabilities probe_passt(const std::string& binary, std::error_code& ec, std::string& failure);
/// Throwing form: `std::system_error` with the codes above, its `what()`
/// naming the binary and the reason.
passt_capabilities probe_passt(const std::string& binary);

/// One diagnostic per option the argv of `o` would use that `caps` lacks,
/// e.g. {"/fqdn", "this passt does not support --fqdn"}; the options given
/// through `param` are checked too, by their full names ("/param/i").
/// Empty: all supported.
/// `o` is not validated here (see `validate`).
std::vector<diagnostic> unsupported_options(const options& o, const passt_capabilities& caps);

} // namespace netpasst

#include <netpasst/impl/probe.hpp>
