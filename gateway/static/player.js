// Playback of the agent's speech: binary frames of PCM16 little-endian mono at the declared output rate.
//
// Each frame becomes an AudioBuffer at that rate (the browser resamples to the device) and is scheduled
// right after the previous one, so frames play gap-free in arrival order.

const START_DELAY_S = 0.05; // a little headroom so the first frame does not start in the past

export class Player {
  /** @param {number} sampleRate the output sample rate declared in Settings (audio.output.sample_rate) */
  constructor(sampleRate) {
    this.sampleRate = sampleRate;
    this.context = null;
    this.nextStart = 0; // context time at which the next frame starts
    this.sources = new Set(); // scheduled frames, kept so a barge-in can stop them
    this.frames = 0; // agent audio frames received (shown on the page, read by tests)
    this.bytes = 0;
    this.scheduled = 0; // frames handed to the audio output
    this.scheduledSeconds = 0;
    this.ended = 0; // frames the audio output has finished playing (or that a barge-in stopped)
  }

  /**
   * Create the AudioContext. Call it from a click handler: browsers let audio start only after a user gesture.
   */
  unlock() {
    if (!this.context) this.context = new AudioContext();
    if (this.context.state === "suspended") this.context.resume();
  }

  /** Queue one frame of agent audio. */
  play(buffer) {
    this.frames += 1;
    this.bytes += buffer.byteLength;
    this.unlock();
    const view = new DataView(buffer);
    const count = Math.floor(buffer.byteLength / 2); // a stray odd byte cannot be a sample: ignored
    if (count === 0) return;
    const audio = this.context.createBuffer(1, count, this.sampleRate);
    const samples = audio.getChannelData(0);
    for (let i = 0; i < count; i++) samples[i] = view.getInt16(i * 2, true) / 0x8000;

    const source = this.context.createBufferSource();
    source.buffer = audio;
    source.connect(this.context.destination);
    this.nextStart = Math.max(this.nextStart, this.context.currentTime + START_DELAY_S);
    source.start(this.nextStart);
    this.nextStart += audio.duration;
    this.sources.add(source);
    source.onended = () => {
      this.sources.delete(source);
      this.ended += 1;
    };
    this.scheduled += 1;
    this.scheduledSeconds += audio.duration;
  }

  /** Stop what is playing or queued: the user started speaking over the agent (barge-in). */
  stop() {
    for (const source of this.sources) source.stop();
    this.sources.clear();
    this.nextStart = 0;
  }

  async close() {
    this.stop();
    const context = this.context;
    this.context = null;
    if (context) await context.close();
  }
}
