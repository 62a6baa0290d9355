"""Fault detection: grid, meter, contactor, temperature and residual-current checks.

Reads what the meter already sampled and the contactor's feedback, decides which faults are
present (firmware/safety/faults.py holds what they mean and how to react) and runs the RCD module's
periodic self-test. Thresholds come from the board settings' records (firmware/core/settings.py:
safety, limits.thermal, sampling), checked at boot.

    safety = Safety(settings.board, board, metering, faults, clock)
    react(safety.fast(offer_limit_ma)); react(safety.rcd())   # every sample / iteration: emergencies
    react(safety.check(session_running, temp_c, freq_chz))    # every control step: the rest

Each returns a list of the new faults, or () when there are none: nothing is allocated then.
"""
_RCD_TEST_MS = 200       # the RCD module must trip within this while its test input is driven
_SETTLE_MS = 1000        # after the meter starts, its readings need this long to mean anything
_CHECK_MS = 100          # check() runs once per control step
_RCD_RELEASE_MS = 1000   # ... and release within this once the test ends


class Safety:
    def __init__(self, cfg, board, metering, faults, clock):
        self.board = board
        self.m = metering
        self.faults = faults
        self.clock = clock
        sample_ms = 1000 // cfg.sampling.rate_hz
        sa = cfg.safety
        self.oc_margin_pct = sa.overcurrent_margin_pct
        self.oc_samples = max(1, sa.overcurrent_ms // sample_ms)
        self.v_low_cv = sa.voltage_min_v * 100
        self.v_high_cv = sa.voltage_max_v * 100
        self.v_samples = max(1, sa.voltage_ms // sample_ms)
        self.loss_cv = sa.phase_loss_v * 100
        self.hz_low = sa.frequency_min_chz
        self.hz_high = sa.frequency_max_chz
        self.settle_ms = sa.contactor_settle_ms
        self.idle_ma = sa.open_current_ma
        t = cfg.limits.thermal
        self.t2 = t.t2_c
        self.t_resume = t.t1_c - t.hyst_c
        self.selftest_s = sa.rcd_selftest_s
        self.m.u_low_cv = self.v_low_cv
        self.m.u_high_cv = self.v_high_cv
        self.v_checks = max(1, self.v_samples * sample_ms // _CHECK_MS)
        self._loss_n = 0
        self._hz_n = 0
        self.meter_started()
        self.phases = metering.phases
        self._k_changed = clock.ticks_ms()
        self._k_state = board.contactor.commanded
        self._k_cycles = board.contactor.cycles
        self._test = None            # RCD self-test: (phase, since) while it runs
        self._next_test = clock.ticks_ms()   # at boot, then every selftest_s
        self.last_selftest = None    # "passed" / "failed", for the technician
        # EMMState0 bits 15..13: the chip's own over-current flags for phases A, B, C
        self._oc_bits = sum(1 << (15 - ph) for ph in range(metering.phases))
        self._new = None             # the faults the running check tripped (a list), None: none yet

    def meter_started(self):
        """The meter was (re)initialised: ignore its readings until they settled."""
        self._settled_at = self.clock.ticks_add(self.clock.ticks_ms(), _SETTLE_MS)

    def _settled(self):
        return self.clock.ticks_diff(self.clock.ticks_ms(), self._settled_at) >= 0

    def fast(self, limit_ma):
        """Emergencies, checked right after each sample; the new Faults to react to.
        OSError for a sample no working chip gives (a bus stuck at 0xFFFF): a meter failure."""
        self.m.limit_ma = limit_ma * (100 + self.oc_margin_pct) // 100
        m = self.m
        if m.u_max_cv == 0xFFFF or (m.status0 & m.status1) == 0xFFFF:
            raise OSError("ATM90E32 implausible sample (U %d cV, status 0x%04x 0x%04x)"
                          % (m.u_max_cv, m.status0, m.status1))
        if m.over_current >= self.oc_samples or m.over_current and m.status0 & self._oc_bits:
            self._trip("overcurrent", "%d mA > %d mA for %d samples%s" % (
                m.i_max_ma, m.limit_ma, m.over_current, ", chip flags it" if m.status0 & self._oc_bits else ""))
        elif self.m.over_current == 0:
            self.faults.gone("overcurrent")
        return self._taken()

    def rcd(self):
        """The residual-current module's trip output, every loop iteration (also while the meter is
        down): the new Faults to react to."""
        if self._test is None:   # during its self-test the module is meant to trip
            if self.board.rcd_tripped():
                self._trip("rcd", "residual current device tripped")
            else:
                self.faults.gone("rcd")
        return self._taken()

    def check(self, session_running, temp_c, freq_chz):
        """Everything else, every control step; the new Faults to react to."""
        m = self.m
        self._contactor()
        self._selftest(session_running)
        if not self._settled() or "meter" in self.faults.active:
            return self._taken()   # a failed meter's last readings are stale: nothing to judge from them
        if m.over_voltage >= self.v_samples:
            self._trip("overvoltage", "%d.%02d V > %d V" % (m.u_max_cv // 100, m.u_max_cv % 100, self.v_high_cv // 100))
        elif m.over_voltage == 0:
            self.faults.gone("overvoltage")
        lost = self._lost_phase()
        self._loss_n = self._loss_n + 1 if lost is not None else 0
        if self._loss_n >= self.v_checks:
            self._trip("phase_loss", "phase L%d below %d V" % (lost + 1, self.loss_cv // 100))
        else:
            self.faults.gone("phase_loss")
            if m.under_voltage >= self.v_samples:
                self._trip("undervoltage", "%d.%02d V < %d V" % (m.u_min_cv // 100, m.u_min_cv % 100, self.v_low_cv // 100))
            elif m.under_voltage == 0:
                self.faults.gone("undervoltage")
        if freq_chz:   # 0: no voltage to measure a frequency on (phase loss says why)
            bad = not self.hz_low <= freq_chz <= self.hz_high
            self._hz_n = self._hz_n + 1 if bad else 0
            if self._hz_n >= 2 * 1000 // _CHECK_MS:   # two housekeeping readings a second apart
                self._trip("frequency", "%d.%02d Hz outside %d.%02d..%d.%02d Hz" % (
                    freq_chz // 100, freq_chz % 100, self.hz_low // 100, self.hz_low % 100,
                    self.hz_high // 100, self.hz_high % 100))
            elif not bad:
                self.faults.gone("frequency")
        if temp_c is not None:
            if temp_c >= self.t2:
                self._trip("overtemp", "%d °C >= %d °C" % (temp_c, self.t2))
            elif temp_c < self.t_resume:
                self.faults.gone("overtemp")
        return self._taken()

    def _lost_phase(self):
        r = self.m.ring
        if not r.count:
            return None
        b = 3 * r.index(0)
        for ph in range(self.phases):
            if r.u[b + ph] < self.loss_cv:
                return ph
        return None

    def _contactor(self):
        """After settling, the poles must be where commanded: current or aux says otherwise."""
        k = self.board.contactor
        now = self.clock.ticks_ms()
        if k.commanded != self._k_state or k.cycles != self._k_cycles:   # closed and opened since?
            self._k_state = k.commanded
            self._k_cycles = k.cycles
            self._k_changed = now
        if self.clock.ticks_diff(now, self._k_changed) < self.settle_ms:
            return
        fb = k.feedback()
        if not k.commanded:
            flowing = self.m.i_max_ma > self.idle_ma and "meter" not in self.faults.active
            if flowing or fb is True:
                self._trip("welded", "%s with the contactor commanded open" % (
                    "%d mA flowing" % self.m.i_max_ma if flowing else "aux contact closed"))
            else:
                self.faults.gone("welded")
            self.faults.gone("stuck_open")   # only closing again can tell: the retry does
        elif fb is False:
            self._trip("stuck_open", "aux contact open with the coil energised")
        else:
            self.faults.gone("stuck_open")

    def _selftest(self, session_running):
        """RCD self-test at boot and every selftest_s, never during a session: drive the module's
        test input, it must trip, then release."""
        if not self.board.has_rcd:
            return
        c = self.clock
        now = c.ticks_ms()
        if self._test is None:
            if not session_running and c.ticks_diff(now, self._next_test) >= 0:
                self.board.rcd_test(True)
                self._test = ("trip", now)
            return
        phase, since = self._test
        tripped = self.board.rcd_tripped()
        if phase == "trip":
            if tripped:
                self.board.rcd_test(False)
                self._test = ("release", now)
            elif c.ticks_diff(now, since) > _RCD_TEST_MS:
                self.board.rcd_test(False)
                self._test = None
                self.last_selftest = "failed"
                self._trip("rcd_selftest", "the RCD did not trip on its test input")
        elif not tripped:
            self._test = None
            self._next_test = c.ticks_add(now, self.selftest_s * 1000)
            self.last_selftest = "passed"
        elif c.ticks_diff(now, since) > _RCD_RELEASE_MS:
            self._test = None
            self.last_selftest = "failed"
            self._trip("rcd_selftest", "the RCD did not release after its test")

    def _trip(self, kind, detail):
        f = self.faults.trip(kind, detail)
        if f is not None:
            if self._new is None:
                self._new = []
            self._new.append(f)

    def _taken(self):
        """The faults this check tripped, handed over: () if none."""
        new = self._new
        self._new = None
        return new if new is not None else ()
