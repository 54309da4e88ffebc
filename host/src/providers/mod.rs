//! Model providers: the wire formats of Anthropic's Messages API and
//! OpenAI's Chat Completions (and compatible servers), an HTTP client built
//! on rustls with ring, and the bound-model backend that ties a binding to
//! a provider, a vault key, the usage ledger and the redactor.

pub mod anthropic;
pub mod assemble;
pub mod binding;
pub mod http;
pub mod openai;
pub mod replay;
pub mod sse;
