//! The modem: the sans-IO AT engine, the PDU codec, the serial driver and a simulated modem.

pub mod at;
pub mod driver;
pub mod pdu;
pub mod profiles;
pub mod sim;
