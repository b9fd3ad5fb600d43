import Foundation
import NIOSSL
import PostgresNIO

/// Where a PostgreSQL store lives: a `postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=...]` URL.
///
/// The password comes from the URL, else from `PGPASSWORD`, else from the
/// file named by `passwordFile` (`--store-password-file`). `sslmode`:
/// `disable`, `prefer` (the default, as libpq's), `require` (encrypted, server
/// not verified), `verify-full` (encrypted and verified against the system's
/// CAs or `sslrootcert=FILE`). `host` may be a Unix-socket folder (`host=/run/postgresql`).
public struct PostgresLocation: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String
    public var sslMode: String
    public var rootCertificate: String?
    /// A Unix-socket folder instead of TCP.
    public var socketFolder: String?

    /// The URL without its password, for logs.
    public var description: String {
        let address = socketFolder.map { "\(user)@[\($0)]:\(port)" } ?? "\(user)@\(host):\(port)"
        return "postgresql://\(address)/\(database)"
    }

    public init(url: String, passwordFile: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        guard url.hasPrefix("postgresql://") || url.hasPrefix("postgres://"), let parts = URLComponents(string: url) else {
            throw PostgresStoreError("'\(url)' is not a PostgreSQL URL: use postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
        }
        let query = Dictionary((parts.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        host = parts.host.flatMap { $0.isEmpty ? nil : $0 } ?? "127.0.0.1"
        port = parts.port ?? Int(query["port"] ?? "") ?? 5432
        user = parts.user.flatMap { $0.removingPercentEncoding } ?? environment["PGUSER"] ?? environment["USER"] ?? "postgres"
        database = String(parts.path.drop(while: { $0 == "/" })).removingPercentEncoding ?? ""
        if database.isEmpty { database = user }
        sslMode = query["sslmode"] ?? "prefer"
        guard ["disable", "prefer", "require", "verify-ca", "verify-full"].contains(sslMode) else {
            throw PostgresStoreError("sslmode '\(sslMode)' is not one of disable, prefer, require, verify-ca, verify-full")
        }
        rootCertificate = query["sslrootcert"]
        if let h = query["host"], h.hasPrefix("/") { socketFolder = h }
        if let p = parts.password?.removingPercentEncoding {
            password = p
        } else if let p = environment["PGPASSWORD"] {
            password = p
        } else if let file = passwordFile {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw PostgresStoreError("cannot read the PostgreSQL password file \(file)")
            }
            password = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    /// The client configuration postgres-nio needs.
    func clientConfiguration() throws -> PostgresClient.Configuration {
        var configuration: PostgresClient.Configuration
        if let socketFolder {
            configuration = .init(unixSocketPath: "\(socketFolder)/.s.PGSQL.\(port)", username: user, password: password, database: database)
        } else {
            configuration = .init(host: host, port: port, username: user, password: password, database: database, tls: try tls())
        }
        configuration.options.connectTimeout = .seconds(5)
        // Bounds on the server's side too: a statement or a lock wait the
        // sequencer gave up on (its own 10 s timeout) does not run on for ever,
        // nor does a transaction whose sequencer died without closing its socket.
        configuration.options.additionalStartupParameters = [
            ("statement_timeout", "15s"), ("lock_timeout", "15s"), ("idle_in_transaction_session_timeout", "60s"),
        ]
        // One per concurrent commit or read, and the notification listener.
        configuration.options.maximumConnections = 32
        configuration.options.minimumConnections = 2
        return configuration
    }

    private func tls() throws -> PostgresClient.Configuration.TLS {
        switch sslMode {
        case "disable":
            return .disable
        case "prefer", "require":
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.certificateVerification = .none
            return sslMode == "prefer" ? .prefer(tls) : .require(tls)
        default:
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.certificateVerification = sslMode == "verify-full" ? .fullVerification : .noHostnameVerification
            if let rootCertificate {
                tls.trustRoots = .file(rootCertificate)
            }
            return .require(tls)
        }
    }
}

/// A PostgreSQL store that cannot start, with what to do.
public struct PostgresStoreError: Error, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
