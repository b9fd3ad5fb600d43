import CSQLite
import SyndClient
import SyndProtocol

/// xDelete: SQLite deletes journals, super-journals and WAL files by name;
/// SyndDB's are private memory files, so there is nothing to delete. Any other
/// name is a database, and deleting it drops it on the sequencer, as deleting
/// a database file does on a local disk (`synd drop` does the same).
extension VFSContext {
    /// Whether SQLite names `path` as one of a database's companion files.
    static func isCompanionFile(_ path: String) -> Bool {
        if path.hasSuffix("-journal") || path.hasSuffix("-wal") || path.hasSuffix("-shm") { return true }
        // Super-journals: "<database>-mj" and 9 hex digits.
        let bytes = Array(path.utf8)
        guard bytes.count > 12, bytes[bytes.count - 12] == UInt8(ascii: "-"), bytes[bytes.count - 11] == UInt8(ascii: "m"),
            bytes[bytes.count - 10] == UInt8(ascii: "j")
        else { return false }
        return bytes.suffix(9).allSatisfy { c in
            (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102)
        }
    }

    /// Drops database `name`. A file of this process that has it open lends
    /// its sequencer and its lease (a drop under another live writer's lease is
    /// refused with SQLITE_BUSY), and learns that its lease is gone, so its next
    /// transaction reads the database afresh. Otherwise the sequencer comes from
    /// SYNDDB_SEQUENCER.
    func dropDatabase(_ name: String) -> Int32 {
        var request = DropDatabaseRequest()
        request.database = name
        let client: SequencerClient
        let open = openFile(named: name)
        if let open {
            client = open.client
            if let lease = open.lease, lease.status.held {
                request.holder = lease.holder
                request.epoch = lease.status.epoch
            }
        } else {
            do {
                let options = try FileOptions(uriName: nil, api: api)
                client = try self.client(url: options.sequencer, options: options.clientOptions)
            } catch let error as FileOptionError {
                recordError(SYND_SQLITE_IOERR_DELETE, "cannot delete database '\(name)': \(error.message)")
                return SYND_SQLITE_IOERR_DELETE
            } catch {
                recordError(SYND_SQLITE_IOERR_DELETE, "cannot delete database '\(name)': \(error)")
                return SYND_SQLITE_IOERR_DELETE
            }
        }
        do throws(SequencerError) {
            _ = try client.drop(request)
            open?.lease?.markLost("database '\(name)' was dropped")
            return SQLITE_OK
        } catch {
            let code = error.code == .failedPrecondition ? SQLITE_BUSY : SYND_SQLITE_IOERR_DELETE
            recordError(code, "cannot delete database '\(name)' on \(client.endpoint): \(error.message)")
            return code
        }
    }
}
