-- 0002_market_data.sql: the market data model behind financial risk reports.
--
-- Reference data (customers, instruments), holdings (portfolios, positions), history (daily
-- closes, FX fixings), and the risk policy (limits, stress scenarios with their shocks).
-- risk/risk_db.c reads these tables; `kinfer sample-data` fills them with a seeded sample set.
-- Tenancy is a plain text column here: the pipeline's own migration owns tenants and API keys,
-- so nothing below references a tenants table.
--
-- data_source says where a row came from ('sample' for `kinfer sample-data`, which deletes and
-- reloads exactly those rows; 'manual', a feed name, ...). Prices are float8: the analytics run
-- in double precision and float8 text output round-trips exactly (PostgreSQL >= 12), so the
-- database and the CSV path feed identical numbers into kf_risk.

CREATE TABLE customers (
    customer_id  text PRIMARY KEY,
    tenant_id    text NOT NULL,
    name         text NOT NULL,
    risk_profile text NOT NULL
        CHECK (risk_profile IN ('conservative', 'balanced', 'growth', 'aggressive')),
    data_source  text NOT NULL DEFAULT 'manual',
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_tenant_idx ON customers (tenant_id);

CREATE TABLE instruments (
    symbol      text PRIMARY KEY,
    name        text NOT NULL,
    asset_class text NOT NULL
        CHECK (asset_class IN ('equity', 'bond', 'commodity', 'fx', 'crypto', 'etf', 'fund',
                               'cash')),
    sector      text,                                 -- GICS-like sector or bond/commodity type
    currency    char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'), -- quote currency of prices
    country     char(2) CHECK (country ~ '^[A-Z]{2}$'),
    isin        text,
    data_source text NOT NULL DEFAULT 'manual'
);

CREATE TABLE portfolios (
    portfolio_id  text PRIMARY KEY,
    name          text NOT NULL,
    base_currency char(3) NOT NULL CHECK (base_currency ~ '^[A-Z]{3}$'),
    customer_id   text NOT NULL REFERENCES customers (customer_id),
    tenant_id     text NOT NULL,
    data_source   text NOT NULL DEFAULT 'manual',
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX portfolios_customer_idx ON portfolios (customer_id);
CREATE INDEX portfolios_tenant_idx ON portfolios (tenant_id);

-- Current holdings. cost_basis: average cost per unit in the instrument's currency.
CREATE TABLE positions (
    portfolio_id text NOT NULL REFERENCES portfolios (portfolio_id) ON DELETE CASCADE,
    symbol       text NOT NULL REFERENCES instruments (symbol),
    quantity     float8 NOT NULL CHECK (quantity <> 'NaN' AND quantity <> 0),
    cost_basis   float8 NOT NULL CHECK (cost_basis >= 0 AND cost_basis <> 'NaN'),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (portfolio_id, symbol)
);
CREATE INDEX positions_symbol_idx ON positions (symbol);

-- Daily closes in the instrument's currency; one row per business day the market traded.
CREATE TABLE price_history (
    symbol     text NOT NULL REFERENCES instruments (symbol) ON DELETE CASCADE,
    price_date date NOT NULL,
    close      float8 NOT NULL CHECK (close > 0 AND close <> 'Infinity' AND close <> 'NaN'),
    PRIMARY KEY (symbol, price_date)
);

-- Daily FX fixings: USD value of one unit of `currency` (USD itself is implicitly 1).
CREATE TABLE fx_rates (
    currency     char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$' AND currency <> 'USD'),
    rate_date    date NOT NULL,
    usd_per_unit float8 NOT NULL
        CHECK (usd_per_unit > 0 AND usd_per_unit <> 'Infinity' AND usd_per_unit <> 'NaN'),
    data_source  text NOT NULL DEFAULT 'manual',
    PRIMARY KEY (currency, rate_date)
);

-- Risk limits: breached when the observed metric exceeds threshold. VaR/ES/volatility and
-- drawdown thresholds are fractions of portfolio value, weights are fractions, hhi is the
-- Herfindahl index (docs/risk-metrics.md).
CREATE TABLE risk_limits (
    portfolio_id text NOT NULL REFERENCES portfolios (portfolio_id) ON DELETE CASCADE,
    metric       text NOT NULL CHECK (metric IN (
        'var_95_1d', 'var_99_1d', 'var_95_10d', 'var_99_10d',
        'es_95_1d', 'es_99_1d', 'es_95_10d', 'es_99_10d',
        'param_var_99_1d', 'param_var_99_10d', 'ewma_vol_1d', 'max_drawdown',
        'max_weight_single', 'max_sector_weight', 'max_asset_class_weight',
        'max_currency_weight', 'top5_weight', 'hhi')),
    threshold    float8 NOT NULL CHECK (threshold <> 'NaN'),
    PRIMARY KEY (portfolio_id, metric)
);

CREATE TABLE stress_scenarios (
    scenario_id text PRIMARY KEY,
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    data_source text NOT NULL DEFAULT 'manual'
);

-- One row per shocked factor: relative change of prices (asset_class, sector, symbol; the most
-- specific one applies to a position) or of a currency's USD value (currency).
CREATE TABLE stress_shocks (
    scenario_id text NOT NULL REFERENCES stress_scenarios (scenario_id) ON DELETE CASCADE,
    dimension   text NOT NULL CHECK (dimension IN ('asset_class', 'sector', 'currency', 'symbol')),
    key         text NOT NULL,
    shock       float8 NOT NULL CHECK (shock > -1 AND shock <> 'Infinity' AND shock <> 'NaN'),
    PRIMARY KEY (scenario_id, dimension, key)
);
