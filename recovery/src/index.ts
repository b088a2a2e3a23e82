export { HeraldRecovery, recoveryFor, RECOVER_EVENT, RECOVERED_EVENT, SKIPPED_EVENT } from './recovery';
export type { ChannelOptions, RecoveryOptions } from './recovery';
export { RecoveredChannel } from './channel';
export type {
  EventCallback,
  EventMetadata,
  GlobalCallback,
  RecoveryCause,
  RecoveryListener,
  RecoveryResult,
} from './channel';
export { parsePosition, formatPosition } from './positions';
export type { Position } from './positions';
export { KNOWN_PUSHER_VERSIONS, pusherVersion, tapFrames } from './tap';
export type { PusherLike } from './tap';
