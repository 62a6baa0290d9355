"""A session's power curve for the operator: min/mean/max power and max current per time bucket.

Fixed size whatever the session length: when the buckets are full, neighbours merge and the
bucket doubles (1 min, 2 min, 4 min …), so a 20-hour session still fits. Allocation-free per
sample; the record is built once, at the end.

    prof = Profile(clock, bucket_s=60, buckets=96)
    prof.add(p_w, i_ma)          # every sample while the session runs
    rec["profile"] = prof.record()
"""
from array import array


class Profile:
    def __init__(self, clock, bucket_s=60, buckets=96):
        if not 8 <= buckets <= 512 or buckets % 2:
            raise ValueError("profile.buckets must be even, 8..512 (got %r)" % (buckets,))
        self.clock = clock
        self.first_bucket_s = bucket_s
        self.size = buckets
        self.min_w = array("i", bytes(4 * buckets))
        self.max_w = array("i", bytes(4 * buckets))
        self.mean_w = array("i", bytes(4 * buckets))
        self.max_ma = array("i", bytes(4 * buckets))
        self.n = array("i", bytes(4 * buckets))
        self.reset()

    def reset(self):
        """Start a new session's curve."""
        self.bucket_ms = self.first_bucket_s * 1000
        self.used = 0            # closed buckets
        self.peak_w = 0
        self._t0 = self.clock.ticks_ms()
        self._open(0)

    def _open(self, i):
        self.min_w[i] = 0x3FFFFFFF
        self.max_w[i] = -0x3FFFFFFF
        self.max_ma[i] = 0
        self.n[i] = 0
        self._sum = 0

    def add(self, p_w, i_ma):
        """One sample into the current bucket (no allocation)."""
        c = self.clock
        while c.ticks_diff(c.ticks_ms(), self._t0) >= self.bucket_ms:
            self._close()
        i = self.used
        if p_w < self.min_w[i]:
            self.min_w[i] = p_w
        if p_w > self.max_w[i]:
            self.max_w[i] = p_w
        if i_ma > self.max_ma[i]:
            self.max_ma[i] = i_ma
        if p_w > self.peak_w:
            self.peak_w = p_w
        self._sum += p_w
        self.n[i] += 1

    def _close(self):
        i = self.used
        if self.n[i]:
            self.mean_w[i] = self._sum // self.n[i]
        else:  # a bucket without samples (the loop stalled): carry the last values
            self.min_w[i] = self.max_w[i] = self.mean_w[i] = self.mean_w[i - 1] if i else 0
        self.used = i + 1
        self._t0 = self.clock.ticks_add(self._t0, self.bucket_ms)
        if self.used == self.size:
            self._halve()
        self._open(self.used)

    def _halve(self):
        """Merge neighbours pairwise: half the buckets, each twice as long."""
        for j in range(self.size // 2):
            a, b = 2 * j, 2 * j + 1
            na, nb = self.n[a], self.n[b]
            self.mean_w[j] = (self.mean_w[a] * na + self.mean_w[b] * nb) // (na + nb) if na + nb else 0
            self.min_w[j] = min(self.min_w[a], self.min_w[b])
            self.max_w[j] = max(self.max_w[a], self.max_w[b])
            self.max_ma[j] = max(self.max_ma[a], self.max_ma[b])
            self.n[j] = na + nb
        self.used = self.size // 2
        self.bucket_ms *= 2

    def record(self):
        """The curve as JSON-ready lists, the open bucket included if it has samples."""
        count = self.used + (1 if self.n[self.used] else 0)
        if self.n[self.used]:
            self.mean_w[self.used] = self._sum // self.n[self.used]
        return {"bucket_s": self.bucket_ms // 1000, "min_w": list(self.min_w[:count]),
                "mean_w": list(self.mean_w[:count]), "max_w": list(self.max_w[:count]),
                "max_ma": list(self.max_ma[:count]), "peak_w": self.peak_w}
