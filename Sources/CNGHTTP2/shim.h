#ifndef SYND_CNGHTTP2_SHIM_H
#define SYND_CNGHTTP2_SHIM_H

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>
#include <fcntl.h>
#include <errno.h>

// OpenSSL macros Swift cannot import.
static inline long synd_ssl_set_tlsext_host_name(SSL *ssl, const char *name) {
    return SSL_set_tlsext_host_name(ssl, name);
}
static inline int synd_errno(void) { return errno; }
// The key type of Ed25519 public keys (a macro of a macro).
static inline int synd_evp_pkey_ed25519(void) { return EVP_PKEY_ED25519; }

#endif
