// jsdom has no layout: give it the scrolling call the blueprint's ChatRoom makes.
if (typeof Element !== 'undefined' && !Element.prototype.scrollIntoView) {
  Element.prototype.scrollIntoView = function scrollIntoView() {};
}
