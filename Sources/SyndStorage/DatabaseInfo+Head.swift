import SyndProtocol

extension DatabaseInfo {
    /// A database's head as the protocol reports it.
    init(name: String, version: UInt64, pageSize: UInt32, pageCount: UInt32, oldestVersion: UInt64) {
        self.init()
        self.name = name
        self.version = version
        self.pageSize = pageSize
        self.pageCount = pageCount
        self.oldestVersion = oldestVersion
    }
}
