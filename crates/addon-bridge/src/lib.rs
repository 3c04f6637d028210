//! The CrossTrade Add-On bridge: the WebSocket endpoint NinjaTrader 8's Add-On holds open, and the
//! relay that forwards tool calls to it with correlation ids and deadlines.
