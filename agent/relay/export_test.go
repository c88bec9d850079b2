package relay

// ExchangeConfigForTest is the TLS configuration of an agent's exchange
// with the authority.
var ExchangeConfigForTest = exchangeConfig
