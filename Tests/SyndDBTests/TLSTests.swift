import Foundation
import SyndDB
import SyndSQLite
import Testing

/// https sequencers: HTTP/2 over TLS (ALPN h2) with certificate verification.
@Suite struct TLSTests {
    @Test func httpsSequencerWithAPrivateCA() async throws {
        let dir = TemporaryDirectory()
        let path = dir.path
        try await offPool {
            let openssl = Process()
            openssl.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
            openssl.arguments = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                                 "-keyout", path + "/key.pem", "-out", path + "/cert.pem", "-days", "1",
                                 "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"]
            openssl.standardError = FileHandle.nullDevice
            try startProcess(openssl)
            openssl.waitUntilExit()
            #expect(openssl.terminationStatus == 0)
            let sequencer = try SequencerProcess(
                directory: path + "/seq", extraArguments: ["--tls-cert", path + "/cert.pem", "--tls-key", path + "/key.pem"])
            let url = "https://localhost:\(sequencer.port)"

            // Not trusted without the CA: a clear refusal, not a crash.
            #expect {
                _ = try Database.open("secure", sequencer: url)
            } throws: { error in
                "\(error)".contains("TLS handshake with https://localhost:\(sequencer.port) failed")
            }
            var options = DatabaseOptions()
            options.tlsCAFile = path + "/cert.pem"
            do {
                let db = try Database.open("secure", sequencer: url, options: options)
                try db.execute("CREATE TABLE t(x); INSERT INTO t VALUES ('over tls')")
            }
            let again = try Database.open("secure", sequencer: url, options: options)
            #expect(try again.scalar("SELECT x FROM t") == .text("over tls"))
        }
    }
}
