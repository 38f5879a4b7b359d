//! The control loop of one host: the [`reconciler`] brings the data plane to
//! the desired state on every change, the [`observer`] writes back what the
//! data plane decided (holders, claims), the [`verifier`] checks that each
//! holder really has its VIP and corrects it when not, the [`feed`] tells
//! the operator (`havipctl events`, the log), and [`latency`] measures how
//! far all this lags behind the data plane.

pub mod feed;
pub mod latency;
pub mod observer;
pub mod reconciler;
pub mod verifier;
