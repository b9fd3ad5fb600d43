import SyndProtocol
import SyndStorage

extension SequencerService {
    /// GetStatus: the databases as the store holds them, with this
    /// sequencer's follow streams and connections.
    func status(_ request: GetStatusRequest) throws(SequencerError) -> GetStatusResponse {
        var statuses = try store.databaseStatuses()
        if !request.database.isEmpty {
            try PageStore.validateName(request.database)
            statuses = statuses.filter { $0.name == request.database }
            guard !statuses.isEmpty else {
                throw SequencerError(.notFound, "database '\(request.database)' does not exist on this sequencer")
            }
        }
        let followers = metrics.followers(of: statuses)
        var response = GetStatusResponse()
        response.store = store.location
        response.storeBytes = UInt64(max(0, try store.storedBytes()))
        response.connections = UInt32(clamping: metrics.connectionsOpen)
        response.databases = statuses.map { s in
            var m = DatabaseStatusMessage()
            m.name = s.name
            m.version = s.version
            m.oldestVersion = s.oldestVersion
            m.pageSize = s.pageSize
            m.pageCount = s.pageCount
            if let lease = s.lease {
                m.leaseHolder = lease.holder
                m.leaseEpoch = lease.epoch
                m.leaseMsLeft = UInt64(max(0, lease.msLeft))
            }
            m.followStreams = UInt32(clamping: followers[s.name]?.streams ?? 0)
            m.followerLagVersions = followers[s.name]?.lag ?? 0
            return m
        }
        return response
    }
}
