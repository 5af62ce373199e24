//! The dashboard's view model: plain values the binary fills from the
//! engine's statistics once per refresh. Nothing here knows about sockets,
//! sessions or clocks, so a rendering test can build any state by hand.

/// Where playback stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Before the startup delay has passed.
    #[default]
    Buffering,
    /// Playing, every byte so far was there in time.
    Playing,
    /// The play head is waiting for a byte that has not arrived.
    Stalled,
    /// Every piece is present.
    Done,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::Buffering => "buffering",
            Phase::Playing => "playing",
            Phase::Stalled => "stalled",
            Phase::Done => "done",
        }
    }
}

/// One piece on the piece map: its state and, once present, where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PieceCell {
    /// Not present and nothing received yet.
    #[default]
    Missing,
    /// Some blocks are in (from peers or the server).
    Partial,
    /// Verified, every block from peers over the plain wire.
    Peer,
    /// Verified, decoded from coded packets (ccfd).
    Coded,
    /// Verified, with some or all blocks from the VoD server.
    Server,
    /// Its deadline passed and it is still not present: playback stalls on it.
    Missed,
}

/// One sample of the key picture, all in bytes at time `t` (seconds since start).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CurvePoint {
    pub t: f64,
    /// B(t): bytes that must have arrived by now.
    pub required: u64,
    /// Bytes present without a gap from the playback origin.
    pub contiguous: u64,
    /// Bytes present anywhere in the file.
    pub held: u64,
}

/// The penalty panel: what the run is judged by.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Penalty {
    pub server_bytes: u64,
    /// Share of the movie from the VoD server, 0..1.
    pub server_share: f64,
    pub missed_pieces: u32,
    pub pieces: u32,
    /// Share of the pieces due so far that came from peers alone, in time.
    pub continuity: f64,
    /// When the opening was complete (seconds), if it is.
    pub startup_seconds: Option<f64>,
    pub stalls: u32,
    pub duplicate_bytes: u64,
}

/// One row of the peers table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PeerRow {
    pub addr: String,
    /// Client name decoded from the peer id.
    pub client: String,
    /// Bytes per second.
    pub down_rate: f64,
    pub up_rate: f64,
    /// We send it data (it holds one of our unchoke slots).
    pub we_unchoke: bool,
    /// It sends us data.
    pub unchokes_us: bool,
    /// It wants data from us.
    pub interested: bool,
    /// It speaks the coded extension with us.
    pub coded: bool,
    /// What carries the connection and how it is encrypted (`tcp`, `tcp+rc4`).
    pub via: String,
}

/// Everything the dashboard shows at one refresh.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dashboard {
    /// Torrent name.
    pub name: String,
    /// How the pieces are picked and where the run takes place, for the header.
    pub mode: String,
    /// Seconds since the stream started.
    pub elapsed: f64,
    pub phase: Phase,
    /// Byte being played, and the movie's length.
    pub play_head: u64,
    pub total_bytes: u64,
    /// Playback rate, bytes per second.
    pub rate: f64,
    /// The deadline picker's horizon, seconds ahead of `elapsed`.
    pub horizon: f64,
    /// History of the key picture, oldest first.
    pub curve: Vec<CurvePoint>,
    /// B(t) from now to the end of the horizon (known in advance), as (t, bytes).
    pub required_ahead: Vec<(f64, u64)>,
    pub pieces: Vec<PieceCell>,
    pub penalty: Penalty,
    pub peers: Vec<PeerRow>,
    /// New candidate addresses per peer source (tracker, dht, pex, manual).
    pub peer_sources: Vec<(String, u64)>,
    /// Download and upload rates over time (bytes per second), oldest first.
    pub down_history: Vec<u64>,
    pub up_history: Vec<u64>,
    /// Recent log lines, oldest first.
    pub log: Vec<String>,
    /// Where a player can watch while it downloads (`--serve`).
    pub serve_url: Option<String>,
}

impl Dashboard {
    /// Share of the pieces that are present (verified), 0..1.
    pub fn progress(&self) -> f64 {
        if self.pieces.is_empty() {
            return 0.0;
        }
        let done = self.pieces.iter().filter(|p| matches!(p, PieceCell::Peer | PieceCell::Coded | PieceCell::Server)).count();
        done as f64 / self.pieces.len() as f64
    }
}
