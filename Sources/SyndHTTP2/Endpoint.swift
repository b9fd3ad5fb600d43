/// Where a sequencer listens: parsed from `http://host:port` (h2c, prior
/// knowledge) or `https://host:port` (TLS with ALPN h2).
public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
    public var tls: Bool
    public var host: String
    public var port: Int

    public init(tls: Bool, host: String, port: Int) {
        self.tls = tls
        self.host = host
        self.port = port
    }

    /// Parses a sequencer URL; a path, query or user part is refused.
    public init(url: String) throws(TransportError) {
        let tls: Bool
        var rest: Substring
        if url.hasPrefix("http://") {
            tls = false
            rest = url.dropFirst(7)
        } else if url.hasPrefix("https://") {
            tls = true
            rest = url.dropFirst(8)
        } else {
            throw TransportError(.badURL, "sequencer URL '\(url)' must start with http:// or https://, e.g. http://127.0.0.1:8433")
        }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard !rest.isEmpty, !rest.contains("/"), !rest.contains("@"), !rest.contains("?") else {
            throw TransportError(.badURL, "sequencer URL '\(url)' must be scheme://host[:port] with no path, e.g. http://127.0.0.1:8433")
        }
        var host = String(rest)
        var port = tls ? 443 : 80
        if host.hasPrefix("[") {  // [IPv6]:port
            guard let close = host.firstIndex(of: "]") else { throw TransportError(.badURL, "sequencer URL '\(url)' has an unclosed IPv6 bracket") }
            let after = host[host.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else { throw TransportError(.badURL, "sequencer URL '\(url)' has a bad port") }
                port = p
            }
            host = String(host[host.index(after: host.startIndex)..<close])
        } else if let colon = host.lastIndex(of: ":") {
            guard let p = Int(host[host.index(after: colon)...]), (1...65535).contains(p) else {
                throw TransportError(.badURL, "sequencer URL '\(url)' has a bad port; use a number 1-65535")
            }
            port = p
            host = String(host[..<colon])
        }
        guard !host.isEmpty else { throw TransportError(.badURL, "sequencer URL '\(url)' has no host") }
        self.init(tls: tls, host: host, port: port)
    }

    public var authority: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    public var description: String { (tls ? "https://" : "http://") + authority }
}
