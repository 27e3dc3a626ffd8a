//! Convenience on the generated envelope types.
//!
//! Spec: §4. Names returned here are the `oneof` field names of the schema,
//! used in logs, transcripts and the conformance suite.

use crate::wire::{ClientFrame, ServerFrame, client_frame, server_frame};

impl client_frame::Body {
    /// The schema name of this body kind, e.g. `"send_message"`.
    pub fn name(&self) -> &'static str {
        use client_frame::Body::*;
        match self {
            Auth(_) => "auth",
            Ping(_) => "ping",
            ListRooms(_) => "list_rooms",
            CreateRoom(_) => "create_room",
            JoinRoom(_) => "join_room",
            LeaveRoom(_) => "leave_room",
            ListMembers(_) => "list_members",
            SendMessage(_) => "send_message",
            FetchHistory(_) => "fetch_history",
            Resume(_) => "resume",
            SetTyping(_) => "set_typing",
            MarkRead(_) => "mark_read",
        }
    }
}

impl server_frame::Body {
    /// The schema name of this body kind, e.g. `"send_ack"`.
    pub fn name(&self) -> &'static str {
        use server_frame::Body::*;
        match self {
            Welcome(_) => "welcome",
            Pong(_) => "pong",
            Error(_) => "error",
            RoomList(_) => "room_list",
            RoomListUpdate(_) => "room_list_update",
            RoomJoined(_) => "room_joined",
            RoomLeft(_) => "room_left",
            MemberList(_) => "member_list",
            SendAck(_) => "send_ack",
            Message(_) => "message",
            HistoryPage(_) => "history_page",
            Resumed(_) => "resumed",
            Presence(_) => "presence",
            Typing(_) => "typing",
            ReadState(_) => "read_state",
        }
    }
}

impl ClientFrame {
    /// A request frame.
    pub fn request(request_id: u64, body: client_frame::Body) -> Self {
        Self {
            request_id,
            body: Some(body),
        }
    }
}

impl ServerFrame {
    /// A reply to `request_id`.
    pub fn reply(request_id: u64, body: server_frame::Body) -> Self {
        Self {
            request_id,
            body: Some(body),
        }
    }

    /// A push (request_id 0).
    pub fn push(body: server_frame::Body) -> Self {
        Self::reply(0, body)
    }
}
