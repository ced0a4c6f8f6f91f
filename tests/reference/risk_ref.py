#!/usr/bin/python3
"""risk_ref.py: an independent numpy computation of kf_risk's metrics, checked against
`kinfer risk --json`.

It reads the CSV files of `kinfer sample-data --csv` with Python's csv module (not our C
parser), aligns prices and FX with numpy, and computes every metric of docs/risk-metrics.md the
direct way (the full covariance matrix with np.cov, the EWMA as an explicit weighted sum, the
drawdown with np.maximum.accumulate). Then it runs kinfer on the same directory and compares
every number with a relative tolerance (default 1e-9; floor: the portfolio value for money
amounts, 1 for fractions), and dates, counts, symbols and breach flags exactly.

Modes:
  check   --kinfer BIN --csv DIR --portfolio P --as-of D [--window N] [--tol T] [--mutate M]
          M (negative control) changes the reference on purpose: ddof0 (population covariance),
          kfloor (k = floor(n(1-c)) + 1), lambda (0.97); the check must then report FAIL.
  pit     --kinfer BIN --csv DIR --portfolio P --as-of D: point in time; kinfer on a copy of
          DIR without rows dated after D must print exactly the same JSON.
  compare A.json B.json [--tol T]: two kinfer reports (e.g. from PostgreSQL and from CSV) agree.

Needs /usr/bin/python3 with numpy (Debian python3-numpy); the pyenv python3 has none.
"""
import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from statistics import NormalDist

import numpy as np

CONF = {"95": 0.95, "99": 0.99}


def read_csv(path):
    with open(path, newline="") as fp:
        return list(csv.DictReader(fp))


def load(dirname, portfolio, as_of):
    """The portfolio's inputs, keeping only data dated <= as_of (ISO strings compare as dates)."""
    pf = [r for r in read_csv(os.path.join(dirname, "portfolios.csv"))
          if r["portfolio_id"] == portfolio]
    if len(pf) != 1:
        raise SystemExit(f"portfolio {portfolio} not in portfolios.csv")
    instr = {r["symbol"]: r for r in read_csv(os.path.join(dirname, "instruments.csv"))}
    pos = [r for r in read_csv(os.path.join(dirname, "positions.csv"))
           if r["portfolio_id"] == portfolio]
    held = {r["symbol"] for r in pos}
    prices = {s: {} for s in held}
    for r in read_csv(os.path.join(dirname, "price_history.csv")):
        if r["symbol"] in held and r["price_date"] <= as_of:
            prices[r["symbol"]][r["price_date"]] = float(r["close"])
    fx = {}
    for r in read_csv(os.path.join(dirname, "fx_rates.csv")):
        if r["rate_date"] <= as_of:
            fx.setdefault(r["currency"], {})[r["rate_date"]] = float(r["usd_per_unit"])
    limits = [(r["metric"], float(r["threshold"]))
              for r in read_csv(os.path.join(dirname, "risk_limits.csv"))
              if r["portfolio_id"] == portfolio]
    shocks = {}
    for r in read_csv(os.path.join(dirname, "stress_shocks.csv")):
        shocks.setdefault(r["scenario_id"], []).append((r["dimension"], r["key"], float(r["shock"])))
    return {
        "base": pf[0]["base_currency"],
        "positions": [{
            "symbol": r["symbol"], "quantity": float(r["quantity"]),
            "cost_basis": float(r["cost_basis"]),
            "asset_class": instr[r["symbol"]]["asset_class"],
            "sector": instr[r["symbol"]]["sector"],
            "currency": instr[r["symbol"]]["currency"]} for r in pos],
        "prices": prices, "fx": fx, "limits": limits, "shocks": shocks,
    }


def carry_forward(series, cal, what):
    """Values of a {date: value} series on the calendar, last observation carried forward."""
    dates = sorted(series)
    vals = np.array([series[d] for d in dates])
    idx = np.searchsorted(np.array(dates), np.array(cal), side="right") - 1
    if len(dates) == 0 or idx[0] < 0:
        raise SystemExit(f"reference: no data for {what} on or before {cal[0]}")
    return vals[idx]


def reference(data, window, lam=0.94, mutate=None):
    pos = data["positions"]
    n = len(pos)
    cal_all = sorted(set().union(*[set(data["prices"][p["symbol"]]) for p in pos]))
    cal = cal_all[-(window + 1):]
    T = len(cal) - 1

    def fx_of(c):
        return np.ones(T + 1) if c == "USD" else carry_forward(data["fx"].get(c, {}), cal, c)

    xb = fx_of(data["base"])
    P = np.column_stack([carry_forward(data["prices"][p["symbol"]], cal, p["symbol"]) for p in pos])
    X = np.column_stack([fx_of(p["currency"]) / xb for p in pos])
    U = P * X  # base-currency value per unit, (T+1) x n
    q = np.array([p["quantity"] for p in pos])
    R = U[1:] / U[:-1] - 1  # T x n simple returns
    V = q * U[-1]
    value = V.sum()
    w = V / value
    pnl = R @ V
    losses = np.sort(-pnl)[::-1]
    out = {"n_returns": T, "first_date": cal[0], "last_date": cal[-1], "value": value,
           "unrealized_pnl": float(np.sum(q * (P[-1] - np.array([p["cost_basis"] for p in pos]))
                                          * X[-1])),
           "historical": {}, "parametric": {}}
    for name, c in CONF.items():
        k = math.ceil(T * (1 - c) - 1e-9)
        if mutate == "kfloor":
            k = math.floor(T * (1 - c)) + 1
        k = min(max(k, 1), T)
        var, es = losses[k - 1], losses[:k].mean()
        out["historical"][name] = {"var_1d": var, "es_1d": es, "var_10d": var * math.sqrt(10),
                                   "es_10d": es * math.sqrt(10), "k": k}
    S = np.cov(R, rowvar=False, ddof=0 if mutate == "ddof0" else 1).reshape(n, n)
    sigma = math.sqrt(V @ S @ V)
    out["parametric"]["sigma_1d"] = sigma
    for name, c in CONF.items():
        z = NormalDist().inv_cdf(c)
        es = sigma * NormalDist().pdf(z) / (1 - c)
        out["parametric"][name] = {"var_1d": z * sigma, "es_1d": es,
                                   "var_10d": z * sigma * math.sqrt(10), "es_10d": es * math.sqrt(10)}
    z99 = NormalDist().inv_cdf(0.99)
    comp = z99 * V * (S @ V) / sigma
    if mutate == "lambda":
        lam = 0.97

    def ewma(x):
        # s_T = lam^(T-1) x_1^2 + sum_{t=2..T} (1 - lam) lam^(T-t) x_t^2, as one weighted sum.
        wts = (1 - lam) * lam ** np.arange(len(x) - 1, -1, -1.0)
        wts[0] = lam ** (len(x) - 1)
        return math.sqrt(np.dot(wts, x * x))

    ev = ewma(pnl / value)
    out["ewma"] = {"lambda": lam, "vol_1d": ev, "vol_annual": ev * math.sqrt(252),
                   "var_99_1d": z99 * ev * value}
    values = U @ q
    peak = np.maximum.accumulate(values)
    dd = 1 - values / peak
    t = int(np.argmax(dd))
    if dd[t] > 0:
        tp = int(np.argmax(values[:t + 1]))
        out["drawdown"] = {"max": dd[t], "amount": peak[t] - values[t], "peak_date": cal[tp],
                           "trough_date": cal[t]}
    else:
        out["drawdown"] = {"max": 0.0, "amount": 0.0, "peak_date": cal[0], "trough_date": cal[0]}
    ws = np.sort(w)[::-1]
    imax = int(np.argmax(w))
    out["concentration"] = {"hhi": float(np.sum(w * w)), "top5_weight": float(ws[:5].sum()),
                            "max_weight": w[imax], "max_weight_symbol": pos[imax]["symbol"]}
    groups = {}
    for dim in ("asset_class", "sector", "currency"):
        g = {}
        for i, p in enumerate(pos):
            g[p[dim]] = g.get(p[dim], 0.0) + V[i]
        groups[dim] = {key: (v, v / value) for key, v in g.items()}
    out["exposures"] = groups
    out["positions"] = {p["symbol"]: {
        "quantity": q[i], "price": P[-1, i], "fx": X[-1, i], "value": V[i], "weight": w[i],
        "unrealized_pnl": q[i] * (P[-1, i] - p["cost_basis"]) * X[-1, i],
        "ewma_vol_1d": ewma(R[:, i]), "component_var_99": comp[i],
        "component_var_99_pct": comp[i] / (z99 * sigma)} for i, p in enumerate(pos)}
    hist, par = out["historical"], out["parametric"]
    observed = {
        "max_weight_single": w[imax], "top5_weight": ws[:5].sum(), "hhi": np.sum(w * w),
        "max_drawdown": out["drawdown"]["max"], "ewma_vol_1d": ev,
        "max_sector_weight": max(v[1] for v in groups["sector"].values()),
        "max_asset_class_weight": max(v[1] for v in groups["asset_class"].values()),
        "max_currency_weight": max(v[1] for v in groups["currency"].values()),
        "param_var_99_1d": par["99"]["var_1d"] / value,
        "param_var_99_10d": par["99"]["var_10d"] / value}
    for c in CONF:
        for h in ("1d", "10d"):
            observed[f"var_{c}_{h}"] = hist[c][f"var_{h}"] / value
            observed[f"es_{c}_{h}"] = hist[c][f"es_{h}"] / value
    out["limits"] = {m: (thr, observed[m], observed[m] > thr) for m, thr in data["limits"]}
    stress = {}
    for scen, sh in data["shocks"].items():
        by = {(d, k): s for d, k, s in sh}
        total = 0.0
        fb = by.get(("currency", data["base"]), 0.0)
        for i, p in enumerate(pos):
            sp = 0.0
            for dim in ("symbol", "sector", "asset_class"):  # most specific first
                if (dim, p[dim]) in by:
                    sp = by[(dim, p[dim])]
                    break
            fc = by.get(("currency", p["currency"]), 0.0)
            total += V[i] * ((1 + sp) * (1 + fc) / (1 + fb) - 1)
        stress[scen] = (total, total / value)
    out["stress"] = stress
    return out


class Checker:
    def __init__(self, tol, money_scale):
        self.tol, self.scale = tol, money_scale
        self.n, self.bad, self.worst = 0, [], 0.0

    def num(self, name, got, want, money=True):
        self.n += 1
        floor = self.scale if money else 1.0
        err = abs(got - want) / max(abs(want), floor)
        self.worst = max(self.worst, err)
        if not (err <= self.tol):
            self.bad.append(f"{name}: kinfer {got!r} reference {want!r} (rel err {err:.3g})")

    def same(self, name, got, want):
        self.n += 1
        if got != want:
            self.bad.append(f"{name}: kinfer {got!r} reference {want!r}")


def compare_report(rep, ref, tol):
    ck = Checker(tol, ref["value"])
    for key in ("n_returns", "first_date", "last_date"):
        ck.same(key, rep[key], ref[key])
    ck.num("value", rep["value"], ref["value"])
    ck.num("unrealized_pnl", rep["unrealized_pnl"], ref["unrealized_pnl"])
    for c in CONF:
        for f in ("var_1d", "es_1d", "var_10d", "es_10d"):
            ck.num(f"historical.{c}.{f}", rep["historical"][c][f], ref["historical"][c][f])
            ck.num(f"parametric.{c}.{f}", rep["parametric"][c][f], ref["parametric"][c][f])
        ck.same(f"historical.{c}.k", rep["historical"][c]["k"], ref["historical"][c]["k"])
    ck.num("parametric.sigma_1d", rep["parametric"]["sigma_1d"], ref["parametric"]["sigma_1d"])
    for f in ("lambda", "vol_1d", "vol_annual"):
        ck.num(f"ewma.{f}", rep["ewma"][f], ref["ewma"][f], money=False)
    ck.num("ewma.var_99_1d", rep["ewma"]["var_99_1d"], ref["ewma"]["var_99_1d"])
    ck.num("drawdown.max", rep["drawdown"]["max"], ref["drawdown"]["max"], money=False)
    ck.num("drawdown.amount", rep["drawdown"]["amount"], ref["drawdown"]["amount"])
    for f in ("peak_date", "trough_date"):
        ck.same(f"drawdown.{f}", rep["drawdown"][f], ref["drawdown"][f])
    for f in ("hhi", "top5_weight", "max_weight"):
        ck.num(f"concentration.{f}", rep["concentration"][f], ref["concentration"][f], money=False)
    ck.same("concentration.max_weight_symbol", rep["concentration"]["max_weight_symbol"],
            ref["concentration"]["max_weight_symbol"])
    for dim, groups in ref["exposures"].items():
        got = {g["key"]: g for g in rep["exposures"][dim]}
        ck.same(f"exposures.{dim} keys", sorted(got), sorted(groups))
        for key, (v, wt) in groups.items():
            if key in got:
                ck.num(f"exposures.{dim}.{key}.value", got[key]["value"], v)
                ck.num(f"exposures.{dim}.{key}.weight", got[key]["weight"], wt, money=False)
        vals = [g["value"] for g in rep["exposures"][dim]]
        ck.same(f"exposures.{dim} sorted by value", vals, sorted(vals, reverse=True))
    got_pos = {p["symbol"]: p for p in rep["positions"]}
    ck.same("positions", sorted(got_pos), sorted(ref["positions"]))
    comp_sum = sum(p["component_var_99"] for p in rep["positions"])
    ck.num("sum of component_var_99 = parametric VaR 99", comp_sum,
           rep["parametric"]["99"]["var_1d"])
    for sym, want in ref["positions"].items():
        if sym not in got_pos:
            continue
        for f, v in want.items():
            money = f in ("value", "unrealized_pnl", "component_var_99")
            ck.num(f"positions.{sym}.{f}", got_pos[sym][f], v, money=money)
    got_lim = {l["metric"]: l for l in rep["limits"]}
    ck.same("limits", sorted(got_lim), sorted(ref["limits"]))
    for m, (thr, obs, br) in ref["limits"].items():
        if m in got_lim:
            ck.num(f"limits.{m}.threshold", got_lim[m]["threshold"], thr, money=False)
            ck.num(f"limits.{m}.observed", got_lim[m]["observed"], obs, money=False)
            ck.same(f"limits.{m}.breached", got_lim[m]["breached"], bool(br))
    ck.same("n_breaches", rep["n_breaches"], sum(1 for v in ref["limits"].values() if v[2]))
    got_st = {s["scenario"]: s for s in rep["stress"]}
    ck.same("stress scenarios", sorted(got_st), sorted(ref["stress"]))
    for s, (pnl, pct) in ref["stress"].items():
        if s in got_st:
            ck.num(f"stress.{s}.pnl", got_st[s]["pnl"], pnl)
            ck.num(f"stress.{s}.pnl_pct", got_st[s]["pnl_pct"], pct, money=False)
    return ck


def run_kinfer(binary, csv_dir, portfolio, as_of, window):
    cmd = [binary, "risk", "--csv", csv_dir, "--portfolio", portfolio, "--as-of", as_of, "--json"]
    if window:
        cmd += ["--window", str(window)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"kinfer risk failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


def cmd_check(a):
    rep = json.loads(run_kinfer(a.kinfer, a.csv, a.portfolio, a.as_of, a.window))
    ref = reference(load(a.csv, a.portfolio, a.as_of), a.window or 500, mutate=a.mutate)
    ck = compare_report(rep, ref, a.tol)
    print(f"{a.portfolio} as of {a.as_of}: {ck.n} checks, worst relative error {ck.worst:.3g}, "
          f"{len(ck.bad)} over {a.tol:g}")
    for line in ck.bad[:25]:
        print("  " + line)
    print("-> FAIL" if ck.bad else "-> PASS")
    return 1 if ck.bad else 0


def cmd_pit(a):
    full = run_kinfer(a.kinfer, a.csv, a.portfolio, a.as_of, a.window)
    with tempfile.TemporaryDirectory(prefix="kf_risk_pit_") as tmp:
        cut = 0
        for name in os.listdir(a.csv):
            src, dst = os.path.join(a.csv, name), os.path.join(tmp, name)
            if name not in ("price_history.csv", "fx_rates.csv"):
                shutil.copy(src, dst)
                continue
            col = "price_date" if name == "price_history.csv" else "rate_date"
            with open(src, newline="") as fi, open(dst, "w", newline="") as fo:
                rd = csv.DictReader(fi)
                wr = csv.DictWriter(fo, fieldnames=rd.fieldnames, lineterminator="\n")
                wr.writeheader()
                for r in rd:
                    if r[col] <= a.as_of:
                        wr.writerow(r)
                    else:
                        cut += 1
        truncated = run_kinfer(a.kinfer, tmp, a.portfolio, a.as_of, a.window)
    print(f"point in time {a.portfolio} as of {a.as_of}: {cut} later rows removed; "
          f"reports {'identical' if full == truncated else 'DIFFER'}")
    if cut == 0:
        print("-> FAIL (nothing after the as-of date: the test proves nothing)")
        return 1
    print("-> PASS" if full == truncated else "-> FAIL")
    return 0 if full == truncated else 1


def cmd_compare(a):
    with open(a.a) as fa, open(a.b) as fb:
        ra, rb = json.load(fa), json.load(fb)
    bad, n = [], 0

    def walk(x, y, path):
        nonlocal n
        if isinstance(x, dict) and isinstance(y, dict):
            if sorted(x) != sorted(y):
                bad.append(f"{path}: keys differ")
                return
            for k in x:
                walk(x[k], y[k], f"{path}.{k}")
        elif isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y):
                bad.append(f"{path}: lengths {len(x)} vs {len(y)}")
                return
            # Lists of records are matched by their identifying key, since SQL and CSV order
            # positions, limits and scenarios differently.
            for key in ("symbol", "metric", "scenario", "key"):
                if x and isinstance(x[0], dict) and key in x[0]:
                    x = sorted(x, key=lambda r: r[key])
                    y = sorted(y, key=lambda r: r[key])
                    break
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{path}[{i}]")
        elif isinstance(x, float) or isinstance(y, float):
            n += 1
            scale = max(abs(x), abs(y), 1.0)
            if abs(x - y) > a.tol * scale:
                bad.append(f"{path}: {x!r} vs {y!r}")
        else:
            n += 1
            if x != y:
                bad.append(f"{path}: {x!r} vs {y!r}")

    walk(ra, rb, "$")
    print(f"compare: {n} values, {len(bad)} differ")
    for line in bad[:25]:
        print("  " + line)
    print("-> FAIL" if bad else "-> PASS")
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    for mode in ("check", "pit"):
        p = sub.add_parser(mode)
        p.add_argument("--kinfer", required=True)
        p.add_argument("--csv", required=True)
        p.add_argument("--portfolio", required=True)
        p.add_argument("--as-of", required=True)
        p.add_argument("--window", type=int, default=0)
        p.add_argument("--tol", type=float, default=1e-9)
        p.add_argument("--mutate", choices=("ddof0", "kfloor", "lambda"))
    p = sub.add_parser("compare")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--tol", type=float, default=1e-12)
    a = ap.parse_args()
    return {"check": cmd_check, "pit": cmd_pit, "compare": cmd_compare}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
