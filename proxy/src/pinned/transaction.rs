//! (to be built)

use super::{ClientIo, Exit};
use crate::session::Session;

/// Serves the client in this mode until it ends.
pub(super) async fn serve(_session: &mut Session, io: ClientIo<'_, '_>) -> Exit {
    super::refuse(io).await
}
