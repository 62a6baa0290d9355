"""The report's plots (matplotlib, Agg): per-station timeline and occupancy, revenue, power curves.

Each *_figure() returns a matplotlib Figure (tests read its axes); png() turns it into bytes.
Axes follow the period: a one-day report has hours, a week or a month has days (ticks on
Mondays past two weeks), longer ones ISO weeks; session counts are whole numbers; every bin
of the period is drawn, so a day without sessions shows zero.

    fig = timeline_figure(figures["timeline"], "Europe/Berlin"); data = png(fig)
"""
import datetime
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from reportlib.sitetime import local  # noqa: E402

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MAX_PANELS = 12      # stations drawn one panel each; the tables hold the others


def png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _empty(ax, what):
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def ticks(unit, bins):
    """(positions, labels) for the x axis of a timeline with these bins."""
    if unit == "hour":
        pos = [i for i in range(len(bins)) if i % 2 == 0]
        return pos, ["%s:00" % bins[i] for i in pos]
    if unit == "week":
        step = max(1, -(-len(bins) // 16))
        pos = list(range(0, len(bins), step))
        return pos, [bins[i][5:] for i in pos]
    days = [datetime.date.fromisoformat(b) for b in bins]
    if len(days) <= 14:
        return list(range(len(days))), ["%s %02d" % (WEEKDAYS[d.weekday()], d.day) for d in days]
    pos = [i for i, d in enumerate(days) if d.weekday() == 0]
    return pos, [days[i].strftime("%d %b") for i in pos]


def _xlabel(tl, tz):
    if tl["unit"] == "hour":
        return "hour of %s (%s)" % (tl["first"], tz)
    if tl["unit"] == "week":
        return "ISO week (%s)" % tz
    return "day (%s; ticks on Mondays)" % tz if len(tl["bins"]) > 14 else "day (%s)" % tz


def timeline_figure(tl, tz):
    """Sessions (bars, whole numbers) and energy (line, zero on empty bins) per station and bin."""
    stations = sorted(tl["stations"])[:MAX_PANELS]
    n = max(len(stations), 1)
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.2 + 2.1 * n), sharex=True, squeeze=False)
    per = {"hour": "hour", "day": "day", "week": "week"}[tl["unit"]]
    if not stations:
        _empty(axes[0][0], "no sessions in this period")
        axes[0][0].set_title("Sessions and energy per %s" % per)
        fig.tight_layout()
        return fig
    x = list(range(len(tl["bins"])))
    for i, st in enumerate(stations):
        ax = axes[i][0]
        row = tl["stations"][st]
        ax.bar(x, row["sessions"], color="#4c78a8", width=0.8, label="sessions")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
        ax.set_ylim(0, max(max(row["sessions"]), 1) * 1.15)
        ax.set_ylabel("sessions")
        ax2 = ax.twinx()
        ax2.plot(x, [e / 1000 for e in row["energy_wh"]], color="#e45756", marker="o", markersize=3,
                 linewidth=1.4, label="energy")
        ax2.set_ylim(0, max(max(row["energy_wh"]) / 1000, 1) * 1.15)
        ax2.set_ylabel("kWh", color="#e45756")
        ax.set_title("%s: %d sessions, %.1f kWh" % (st, sum(row["sessions"]), sum(row["energy_wh"]) / 1000),
                     loc="left", fontsize="medium")
        ax.set_xlim(-0.6, len(x) - 0.4)
    pos, labels = ticks(tl["unit"], tl["bins"])
    axes[-1][0].set_xticks(pos, labels, rotation=0 if tl["unit"] == "hour" or len(pos) <= 8 else 45,
                           ha="center" if tl["unit"] == "hour" or len(pos) <= 8 else "right")
    axes[-1][0].set_xlabel(_xlabel(tl, tz))
    hidden = len(tl["stations"]) - len(stations)
    fig.suptitle("Sessions (bars) and energy (line) per %s and station%s" % (
        per, ", %d more stations in the tables" % hidden if hidden > 0 else ""))
    fig.tight_layout()
    return fig


def occupancy_figure(per_station, tz):
    """One weekday x hour heat map per station: share of that station's time in use."""
    stations = sorted(per_station)[:MAX_PANELS]
    n = max(len(stations), 1)
    fig, axes = plt.subplots(n, 1, figsize=(10, 0.6 + 2.3 * n), squeeze=False)
    if not stations:
        _empty(axes[0][0], "no sessions in this period")
        axes[0][0].set_title("Occupancy")
        fig.tight_layout()
        return fig
    for i, st in enumerate(stations):
        ax = axes[i][0]
        im = ax.imshow([[v / 10 for v in row] for row in per_station[st]], aspect="auto", cmap="Blues",
                       vmin=0, vmax=100)
        ax.set_yticks(range(7), WEEKDAYS)
        ax.set_xticks(range(24), [str(h) for h in range(24)])
        ax.set_title("%s: share of the hour in use, %%" % st, loc="left", fontsize="medium")
        fig.colorbar(im, ax=ax, label="%", pad=0.01)
    axes[-1][0].set_xlabel("hour of day (%s)" % tz)
    fig.tight_layout()
    return fig


def revenue_figure(months, decimals):
    fig, ax = plt.subplots(figsize=(10, 3.6))
    currencies = sorted(set(r["currency"] for r in months))
    if months:
        cur = currencies[0]
        labels = sorted(set(r["period"] for r in months))
        stations = sorted(set(r["station"] for r in months))
        width = 0.8 / max(len(stations), 1)
        scale = 10 ** decimals.get(cur, 2)
        for i, st in enumerate(stations):
            vals = {r["period"]: r["incl_minor"] / scale for r in months if r["station"] == st and r["currency"] == cur}
            ax.bar([j + i * width for j in range(len(labels))], [vals.get(p, 0) for p in labels], width, label=st)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels)
        ax.set_ylabel("revenue incl. VAT, %s" % cur)
        if len(stations) <= 12:
            ax.legend(fontsize="small")
        title = "Revenue per station and month (%s%s)" % (cur, ", other currencies in the tables"
                                                          if len(currencies) > 1 else "")
    else:
        _empty(ax, "no revenue in this period")
        title = "Revenue per station and month"
    ax.set_title(title)
    fig.tight_layout()
    return fig


def curve_figure(profile, start_s, zone, tz, title):
    """A session's power curve from its profile: mean power, min-max band, max current."""
    step = profile["bucket_s"]
    mean = profile["mean_w"]
    n = len(mean)
    times = [local(start_s + i * step, zone).replace(tzinfo=None) for i in range(n + 1)]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    lo = [v / 1000 for v in profile.get("min_w") or mean]
    hi = [v / 1000 for v in profile.get("max_w") or mean]
    ax.fill_between(times, lo + lo[-1:], hi + hi[-1:], step="post", color="#9ecae9", label="min-max")
    ax.step(times, [v / 1000 for v in mean] + [mean[-1] / 1000], where="post", color="#1f5f99", label="mean")
    ax.set_ylim(0, max(max(hi), 1) * 1.15)
    ax.set_ylabel("power, kW")
    handles = ax.get_legend_handles_labels()
    if profile.get("max_ma"):
        ax2 = ax.twinx()
        amps = [v / 1000 for v in profile["max_ma"]]
        ax2.step(times, amps + amps[-1:], where="post", color="#e45756", linewidth=0.9, linestyle="--",
                 label="max current")
        ax2.set_ylim(0, max(max(amps), 1) * 1.5)      # apart from the power line when both are flat
        ax2.set_ylabel("max current, A", color="#e45756")
        more = ax2.get_legend_handles_labels()
        handles = (handles[0] + more[0], handles[1] + more[1])
    fmt = matplotlib.dates.DateFormatter("%H:%M")
    ax.xaxis.set_major_formatter(fmt)
    ax.set_xlabel("local time (%s), %d-minute buckets" % (tz, step // 60) if step >= 60 else
                  "local time (%s), %d-s buckets" % (tz, step))
    ax.set_title(title, loc="left", fontsize="medium")
    ax.legend(*handles, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=3, fontsize="small", frameon=False)
    fig.tight_layout()
    return fig
