import ArgumentParser
import Foundation
import SyndClient
import SyndProtocol

/// `synd status`: what a sequencer holds now.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show a sequencer's databases: versions, oldest version kept, size, writer lease and followers.")

    @Option(help: "Sequencer URL (default: $SYNDDB_SEQUENCER).")
    var sequencer: String?

    @Option(help: "Only this database.")
    var db: String?

    @Flag(help: "One JSON object instead of a table.")
    var json = false

    func run() throws {
        let url = try sequencerURL(sequencer)
        let status: GetStatusResponse
        do {
            status = try SequencerClient(url: url).status(database: db ?? "")
        } catch {
            throw CLIError("cannot get the status of \(url): \(error.message)")
        }
        if json {
            print(Self.json(status, url: url))
        } else {
            print(Self.table(status, url: url), terminator: "")
        }
    }

    static func table(_ s: GetStatusResponse, url: String) -> String {
        var out = "sequencer \(url): store \(s.store) (\(bytes(s.storeBytes))), \(s.connections) client connection\(s.connections == 1 ? "" : "s")\n"
        guard !s.databases.isEmpty else { return out + "no databases\n" }
        var rows = [["DATABASE", "VERSION", "OLDEST", "SIZE", "WRITER LEASE", "FOLLOWERS"]]
        for d in s.databases {
            let lease = d.leaseHolder.isEmpty
                ? "-" : "\(d.leaseHolder) (epoch \(d.leaseEpoch), \(String(format: "%.1f", Double(d.leaseMsLeft) / 1000)) s left)"
            let followers = d.followStreams == 0 ? "-" : "\(d.followStreams) (lag \(d.followerLagVersions))"
            rows.append([d.name, "\(d.version)", "\(d.oldestVersion)", bytes(UInt64(d.pageCount) * UInt64(d.pageSize)), lease, followers])
        }
        let widths = (0..<rows[0].count).map { c in rows.map { $0[c].count }.max()! }
        for row in rows {
            out += zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
                .trimmingCharacters(in: .whitespaces) + "\n"
        }
        return out
    }

    static func json(_ s: GetStatusResponse, url: String) -> String {
        let databases: [[String: Any]] = s.databases.map { d in
            var o: [String: Any] = [
                "name": d.name, "version": d.version, "oldest_version": d.oldestVersion, "page_size": d.pageSize,
                "page_count": d.pageCount, "size_bytes": UInt64(d.pageCount) * UInt64(d.pageSize),
                "follow_streams": d.followStreams, "follower_lag_versions": d.followerLagVersions,
            ]
            if !d.leaseHolder.isEmpty {
                o["lease"] = ["holder": d.leaseHolder, "epoch": d.leaseEpoch, "ms_left": d.leaseMsLeft] as [String: Any]
            }
            return o
        }
        let object: [String: Any] = [
            "sequencer": url, "store": s.store, "store_bytes": s.storeBytes, "connections": s.connections, "databases": databases,
        ]
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// "4.1 MB".
    static func bytes(_ n: UInt64) -> String {
        let units = ["B", "kB", "MB", "GB", "TB"]
        var value = Double(n)
        var unit = 0
        while value >= 1000, unit < units.count - 1 {
            value /= 1000
            unit += 1
        }
        return unit == 0 ? "\(n) B" : String(format: "%.1f ", value) + units[unit]
    }
}
