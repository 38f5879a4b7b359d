//! The control loop of one host: the [`reconciler`] brings the data plane to
//! the desired state on every change, the [`observer`] writes back what the
//! data plane decided (holders, claims), the [`verifier`] checks that each
//! holder really has its VIP and corrects it when not, and the [`feed`]
//! tells the operator (`havipctl events`, the log).

pub mod feed;
pub mod observer;
pub mod reconciler;
pub mod verifier;
