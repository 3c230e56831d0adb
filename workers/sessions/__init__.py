"""workers/sessions."""
