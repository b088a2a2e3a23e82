declare module 'pusher-js/dist/web/pusher-with-encryption.js' {
  import Pusher from 'pusher-js';
  export default Pusher;
}
