#if canImport(Glibc)
import Glibc
#endif

/// A value behind a pthread mutex.
///
/// The client and the VFS use this, not `Synchronization.Mutex`: on Linux that
/// is a priority-inheritance futex keyed by a thread id the Swift runtime
/// caches per thread, and in a process forked from one that had used it (a
/// Python `multiprocessing` worker, a pre-forking server) the main thread
/// keeps the parent's cached id, so the first contended lock fails with a
/// fatal error. A pthread mutex keeps no such state.
public final class Locked<Value>: @unchecked Sendable {
    // Safe: `value` is only touched with `mutex` held, and the mutex lives at a
    // fixed heap address for the object's lifetime.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var value: Value

    public init(_ value: Value) {
        self.value = value
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func withLock<T, E: Error>(_ body: (inout Value) throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }

    /// Runs `body` only if the lock is free now; nil otherwise.
    public func withLockIfAvailable<T, E: Error>(_ body: (inout Value) throws(E) -> T) throws(E) -> T? {
        guard pthread_mutex_trylock(mutex) == 0 else { return nil }
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
