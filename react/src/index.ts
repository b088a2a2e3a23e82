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
export type { RecoveryResult } from '@herald/recovery';
export { usePresenceChannel } from './usePresenceChannel';
export type { PresenceMember, PresenceState } from './usePresenceChannel';
export { useConnectionState } from './useConnectionState';
export type { ConnectionState } from './useConnectionState';
export { useClientTrigger, ClientEventError } from './useClientTrigger';
export type { ClientTrigger } from './useClientTrigger';
export { useUser, useUserEvent } from './useUser';
export type { UseUserOptions, UserState } from './useUser';
export type { HeraldUserData } from './user-store';
