"""Synthetic risk-commentary corpus for kinfer's demonstration model.

Each example is one line of portfolio metrics, in the shape the risk_report prompt uses:

    Portfolio P-001 as of 2026-10-30: value 12.3M USD; 1-day 99% VaR 412,300 (3.35%); ...

followed by "\nCommentary:" and a few sentences that quote those figures back. The sentences
come from families (overview, VaR, expected shortfall, concentration, volatility and drawdown,
limits, stress, recommendation), each with several phrasings; the order of the middle
sentences is shuffled and the qualitative words (risk band, concentration, tail) follow
thresholds on the figures, so a model has to read the numbers rather than memorise one text.

Everything is driven by one random.Random(seed): the same seed gives the same corpus.
Text is ASCII only, so the GPT-2 pre-tokenizer behaves identically in Python and in kinfer.
"""

import random

CURRENCIES = ["USD", "EUR", "GBP", "CHF", "JPY", "CAD", "AUD"]
SECTORS = [
    "Technology", "Financials", "Energy", "Healthcare", "Industrials", "Utilities",
    "Materials", "Real Estate", "Consumer Staples", "Consumer Discretionary",
    "Telecoms", "Government Bonds", "Corporate Bonds", "Emerging Markets", "Commodities",
]
NAMES = ["AAPL", "MSFT", "NVDA", "JPM", "XOM", "NESN", "SAP", "ASML", "TSLA", "AMZN",
         "HSBA", "SHEL", "NOVN", "TTE", "SIE", "BNP", "BMW", "GOOGL", "META", "ROG"]
SCENARIOS = ["2008 crisis", "rates +200bp", "equity -20%", "oil shock", "credit spread widening",
             "COVID-2020", "USD +10%", "stagflation"]

PROMPT_SEP = "\nCommentary:"


def fmt_int(x):
    """412300 -> '412,300'."""
    return "{:,}".format(int(round(x)))


def fmt_pct(x, nd=2):
    return "{:.{}f}%".format(x, nd)


def fmt_value(v):
    """Portfolio value in millions: 12.3M, or 1.25B above a billion."""
    if v >= 1e9:
        return "{:.2f}B".format(v / 1e9)
    return "{:.1f}M".format(v / 1e6)


def risk_band(var_pct):
    if var_pct < 1.5:
        return "low"
    if var_pct < 3.0:
        return "moderate"
    if var_pct < 5.0:
        return "elevated"
    return "high"


def concentration(w1):
    if w1 >= 30.0:
        return "high"
    if w1 >= 20.0:
        return "moderate"
    return "low"


def sample_portfolio(rng):
    """Draws one consistent set of metrics."""
    p = {}
    p["id"] = "P-%03d" % rng.randint(1, 999)
    p["date"] = "%04d-%02d-%02d" % (rng.randint(2024, 2027), rng.randint(1, 12), rng.randint(1, 28))
    p["ccy"] = rng.choice(CURRENCIES)
    value = 10 ** rng.uniform(6.0, 9.6)
    p["value_num"] = value
    p["value"] = fmt_value(value)
    p["conf"] = rng.choice([95, 99, 99])
    p["horizon"] = rng.choice([1, 1, 1, 10])
    base = rng.uniform(0.4, 7.5)
    if p["horizon"] == 10:
        base *= 1.6
    if p["conf"] == 95:
        base *= 0.72
    var_pct = round(base, 2)
    p["var_pct_num"] = var_pct
    p["var_pct"] = fmt_pct(var_pct)
    p["var"] = fmt_int(round(value * var_pct / 100.0, -2))
    es_pct = round(var_pct * rng.uniform(1.12, 1.45), 2)
    p["es_pct_num"] = es_pct
    p["es_pct"] = fmt_pct(es_pct)
    p["es"] = fmt_int(round(value * es_pct / 100.0, -2))
    p["tail"] = "heavy" if es_pct / var_pct > 1.33 else "moderate"
    p["vol"] = fmt_pct(var_pct * rng.uniform(3.0, 5.5), 1)
    dd = rng.uniform(1.0, 35.0)
    p["dd"] = fmt_pct(-dd, 1)
    p["dd_abs"] = fmt_pct(dd, 1)
    n_exp = 3
    secs = rng.sample(SECTORS, n_exp)
    w = sorted([rng.uniform(4.0, 45.0) for _ in range(n_exp)], reverse=True)
    p["exp"] = list(zip(secs, [fmt_pct(x, 1) for x in w]))
    p["w1_num"] = w[0]
    p["conc"] = concentration(w[0])
    p["limit_num"] = round(rng.choice([2.0, 2.5, 3.0, 4.0, 5.0]) * (1.6 if p["horizon"] == 10 else 1.0), 2)
    p["limit"] = fmt_pct(p["limit_num"])
    p["var_breach"] = var_pct > p["limit_num"]
    breaches = []
    if p["var_breach"]:
        breaches.append("VaR %s > %s" % (p["var_pct"], p["limit"]))
    if w[0] > 30.0 and rng.random() < 0.7:
        breaches.append("sector %s %s > 30.0%%" % (secs[0], p["exp"][0][1]))
    if rng.random() < 0.25:
        nm = rng.choice(NAMES)
        breaches.append("single-name %s %s > 10.0%%" % (nm, fmt_pct(rng.uniform(10.1, 16.0), 1)))
    p["breaches"] = breaches
    p["has_stress"] = rng.random() < 0.6
    p["scenario"] = rng.choice(SCENARIOS)
    p["stress"] = fmt_pct(-var_pct * rng.uniform(2.0, 5.0), 1)
    p["has_vol"] = rng.random() < 0.8
    p["has_dd"] = rng.random() < 0.8
    return p


def prompt_line(p):
    """The metrics line, in a fixed field order (optional fields may be absent)."""
    parts = ["value %s %s" % (p["value"], p["ccy"]),
             "%d-day %d%% VaR %s (%s)" % (p["horizon"], p["conf"], p["var"], p["var_pct"]),
             "ES %s (%s)" % (p["es"], p["es_pct"])]
    if p["has_vol"]:
        parts.append("volatility %s" % p["vol"])
    if p["has_dd"]:
        parts.append("max drawdown %s" % p["dd"])
    parts.append("top exposures " + ", ".join("%s %s" % e for e in p["exp"]))
    parts.append("VaR limit %s" % p["limit"])
    if p["breaches"]:
        parts.append("breaches: %d (%s)" % (len(p["breaches"]), "; ".join(p["breaches"])))
    else:
        parts.append("breaches: none")
    if p["has_stress"]:
        parts.append("stress %s %s" % (p["scenario"], p["stress"]))
    return "Portfolio %s as of %s: %s." % (p["id"], p["date"], "; ".join(parts))


def s_overview(rng, p):
    return rng.choice([
        "Portfolio {id} is valued at {value} {ccy} as of {date}.",
        "As of {date}, portfolio {id} holds {value} {ccy} of assets.",
        "{id} closed {date} with a net asset value of {value} {ccy}.",
        "On {date} the {value} {ccy} portfolio {id} was reviewed.",
        "This report covers portfolio {id}, worth {value} {ccy} on {date}.",
        "Portfolio {id} ({value} {ccy}) is assessed as of {date}.",
    ]).format(**p)


def s_var(rng, p):
    odds = "one day in a hundred" if p["conf"] == 99 else "one day in twenty"
    days = "one day" if p["horizon"] == 1 else "ten days"
    return rng.choice([
        "The {h}-day {c}% VaR is {var} {ccy}, or {var_pct} of value, which places the portfolio in the {band} risk band.",
        "At {c}% confidence the portfolio could lose more than {var} {ccy} ({var_pct}) over {days}, so risk is {band}.",
        "Value at risk stands at {var} {ccy} ({var_pct}), a {band} level for a {h}-day horizon.",
        "Losses above {var} {ccy} ({var_pct} of value) are expected on roughly {odds}; overall risk is {band}.",
        "Risk is {band}: the {c}% VaR of {var_pct} means a {h}-day loss of {var} {ccy} would only be exceeded rarely.",
        "With a VaR of {var_pct} ({var} {ccy}), the portfolio sits in the {band} risk band.",
    ]).format(h=p["horizon"], c=p["conf"], days=days, odds=odds, band=risk_band(p["var_pct_num"]), **p)


def s_es(rng, p):
    return rng.choice([
        "Expected shortfall is {es} {ccy} ({es_pct}), the average loss beyond the VaR threshold.",
        "If the VaR level is breached, the average loss is estimated at {es} {ccy} ({es_pct}).",
        "Tail risk is {tail}, with expected shortfall at {es_pct} ({es} {ccy}).",
        "The expected shortfall of {es_pct} points to a {tail} tail beyond the VaR.",
        "Beyond the VaR, losses would average {es} {ccy}, or {es_pct} of the portfolio.",
    ]).format(**p)


def s_exposure(rng, p):
    (e1, w1), (e2, w2), (e3, w3) = p["exp"]
    return rng.choice([
        "The largest exposure is {e1} at {w1}, followed by {e2} ({w2}) and {e3} ({w3}).",
        "Concentration is {conc}: {e1} accounts for {w1} of the book.",
        "{e1} dominates with {w1}, ahead of {e2} at {w2} and {e3} at {w3}.",
        "Exposure is led by {e1} ({w1}); concentration is {conc}.",
        "Top holdings by sector are {e1} {w1}, {e2} {w2} and {e3} {w3}, so concentration is {conc}.",
    ]).format(e1=e1, w1=w1, e2=e2, w2=w2, e3=e3, w3=w3, conc=p["conc"])


def s_voldd(rng, p):
    if p["has_vol"] and p["has_dd"]:
        return rng.choice([
            "Annualised volatility is {vol} and the maximum drawdown stands at {dd}.",
            "The portfolio has drawn down {dd_abs} from its peak, with volatility at {vol}.",
            "Volatility of {vol} comes with a maximum drawdown of {dd}.",
        ]).format(**p)
    if p["has_vol"]:
        return rng.choice([
            "Annualised volatility is {vol}.",
            "Realised volatility runs at {vol}.",
        ]).format(**p)
    if p["has_dd"]:
        return rng.choice([
            "The maximum drawdown is {dd}.",
            "From its peak the portfolio has lost {dd_abs}.",
        ]).format(**p)
    return None


def s_limits(rng, p):
    n = len(p["breaches"])
    if n == 0:
        return rng.choice([
            "All limits are respected and VaR remains below the {limit} limit.",
            "No limit breaches were recorded; VaR is inside its {limit} limit.",
            "The portfolio is within every limit, including the {limit} VaR limit.",
        ]).format(**p)
    first = p["breaches"][0]
    word = "breach" if n == 1 else "breaches"
    if p["var_breach"]:
        return rng.choice([
            "The VaR limit of {limit} is breached ({first}), with {n} {word} in total.",
            "Warning: VaR exceeds its {limit} limit; {n} limit {word} recorded.",
            "There {verb} {n} limit {word}, starting with {first}.",
        ]).format(first=first, n=n, word=word, verb="is" if n == 1 else "are", **p)
    return rng.choice([
        "VaR is within its {limit} limit, but {n} other {word} recorded: {first}.",
        "There {verb} {n} limit {word}: {first}.",
        "Warning: {first}, although VaR respects the {limit} limit.",
    ]).format(first=first, n=n, word=word, verb="is" if n == 1 else "are", **p)


def s_stress(rng, p):
    if not p["has_stress"]:
        return None
    return rng.choice([
        "Under the {scenario} scenario the portfolio would lose {stress}.",
        "A {scenario} stress test shows a loss of {stress}.",
        "The {scenario} scenario implies a move of {stress} in portfolio value.",
    ]).format(**p)


def s_action(rng, p):
    band = risk_band(p["var_pct_num"])
    e1 = p["exp"][0][0]
    if p["breaches"]:
        return rng.choice([
            "We recommend reducing exposure to {e1} and reviewing hedges before the next report.",
            "The risk committee should review the breach and agree a plan to cut {e1} exposure.",
            "Action is required: trim {e1} and bring the portfolio back within its limits.",
        ]).format(e1=e1)
    if band in ("elevated", "high"):
        return rng.choice([
            "Although no limit is breached, the {band} risk level calls for closer monitoring.",
            "Consider hedging the {e1} position given the {band} risk level.",
        ]).format(e1=e1, band=band)
    return rng.choice([
        "No immediate action is required.",
        "The risk profile is acceptable and no action is needed.",
        "Positioning can be maintained; the next review is routine.",
    ])


def commentary(rng, p):
    """Overview first, then VaR and ES in order among shuffled middles, then the action."""
    middle = [s_exposure(rng, p), s_voldd(rng, p), s_limits(rng, p), s_stress(rng, p)]
    middle = [s for s in middle if s is not None]
    rng.shuffle(middle)
    k = rng.randint(1, len(middle))  # keep some sentences out so lengths vary
    middle = middle[:k]
    sents = [s_overview(rng, p), s_var(rng, p)]
    if rng.random() < 0.8:
        sents.append(s_es(rng, p))
    sents += middle
    sents.append(s_action(rng, p))
    return " " + " ".join(sents)


def example(rng):
    """(prompt, completion): prompt ends with PROMPT_SEP, completion starts with a space."""
    p = sample_portfolio(rng)
    return prompt_line(p) + PROMPT_SEP, commentary(rng, p)


def generate(n, seed):
    rng = random.Random(seed)
    return [example(rng) for _ in range(n)]


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="print sample corpus examples")
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    for pr, co in generate(a.n, a.seed):
        print(pr + co + "\n")
