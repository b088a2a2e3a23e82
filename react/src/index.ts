export { HeraldProvider, PusherProvider } from './provider';
export type {
  HeraldProviderProps,
  ProviderWithClientProps,
  ProviderWithOptionsProps,
  PusherConstructor,
} from './provider';
export { usePusher } from './context';
export { useChannel, useChannelStatus } from './useChannel';
export type { ChannelStatus, ChannelStatusResult } from './useChannel';
export { useEvent } from './useEvent';
export type { EventCallback, EventMetadata } from './useEvent';
export { useRecovery } from './useRecovery';
export type { RecoveryState } from './useRecovery';
// The recovery helper the hooks use, for code that binds through it directly (the same instance per
// pusher-js client as the hooks').
export { HeraldRecovery, RecoveredChannel, recoveryFor } from 'herald-channels-recovery';
export type { RecoveryOptions, RecoveryResult, ChannelOptions } from 'herald-channels-recovery';
export { usePresenceChannel } from './usePresenceChannel';
export type { PresenceMember, PresenceState } from './usePresenceChannel';
export { useConnectionState } from './useConnectionState';
export type { ConnectionState } from './useConnectionState';
export { useClientTrigger, ClientEventError } from './useClientTrigger';
export type { ClientTrigger } from './useClientTrigger';
export { useUser, useUserEvent } from './useUser';
export type { UseUserOptions, UserState } from './useUser';
export type { HeraldUserData } from './user-store';
