//! Connection scheduling policies (under construction).
