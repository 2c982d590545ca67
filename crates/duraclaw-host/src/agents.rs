//! `GET /api/agents`, the same on both hosts: the host asks the gateway
//! ([`request`]) and answers its reply as [`body`] reads it.

use duraclaw_core::protocol::{AgentInfo, GatewayRequest};

use crate::http::HttpError;

/// The request that asks the gateway for its agents, each checked now.
pub fn request() -> GatewayRequest {
    GatewayRequest::Agents {}
}

/// The answer's body: the gateway's agents, a JSON array of
/// [`AgentInfo`]; a reply that is not that is the gateway's fault (502).
pub fn body(value: serde_json::Value) -> Result<String, HttpError> {
    let agents: Vec<AgentInfo> = serde_json::from_value(value).map_err(|e| {
        tracing::warn!(error = %e, "the gateway's agents do not decode");
        HttpError::new(502, "the gateway's list of agents does not decode")
    })?;
    serde_json::to_string(&agents).map_err(|_| HttpError::new(500, crate::http::INTERNAL_MESSAGE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_gateways_list_is_passed_on_checked() {
        let list = json!([{"name": "claude", "title": "Claude Code", "kind": "claude",
            "available": true, "supports": {"resume": true, "modes": true, "models": true,
            "cost": true}},
            {"name": "codex", "title": "Codex", "kind": "acp", "available": false,
            "error": "command `codex-acp` not found"}]);
        let text = body(list).unwrap();
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back[1]["error"], "command `codex-acp` not found");
        assert_eq!(back[1]["supports"]["resume"], false);
        assert_eq!(body(json!({"agents": 1})).unwrap_err().status, 502);
    }
}
